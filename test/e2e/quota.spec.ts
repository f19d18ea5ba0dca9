/**
 * Real quota: Chromium itself refuses the writes (the origin's quota set
 * just above what it uses, through the DevTools protocol, as a full disk
 * or a small quota would), not an injected fault. The OPFS device reports
 * ENOSPC; under on-target-error=enospc the job pauses with io-status
 * nospace, and once another image is deleted Resume completes it, equal to
 * its source; under report it fails cleanly and its partial target is a
 * valid image. qemu-img checks both targets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, CDPSession, Page } from '@playwright/test';
import { test, expect } from './fixtures.js';
import { createBlank, jobOutcome, jobState, makeDemo, openApp, submitMirror } from './app.js';

const MiB = 1 << 20;

/**
 * The origin may hold `extra` bytes more than it holds now, for as long as
 * the returned session lives (DevTools drops an override when it detaches).
 */
async function quotaAbove(page: Page, context: BrowserContext, extra: number): Promise<CDPSession> {
  const cdp = await context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  const { usage } = await cdp.send('Storage.getUsageAndQuota', { origin });
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + extra });
  return cdp;
}

async function liftQuota(page: Page, cdp: CDPSession): Promise<void> {
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(page.url()).origin });
  await cdp.detach();
}

/** An image's bytes, from OPFS to a file here (for qemu-img). */
async function saveImage(page: Page, name: string, path: string): Promise<void> {
  const base64 = await page.evaluate(async (n) => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('images');
    const bytes = new Uint8Array(await (await (await dir.getFileHandle(n)).getFile()).arrayBuffer());
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  }, name);
  writeFileSync(path, Buffer.from(base64, 'base64'));
}

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

let dir: string;
test.beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-quota-'));
});
test.afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('real quota under enospc: the job pauses (nospace); deleting an image and Resume completes it, identical to its source', async ({ page, context }) => {
  await openApp(page);
  await makeDemo(page);
  await createBlank(page, 'ballast.raw', '8M', 'raw');
  const cdp = await quotaAbove(page, context, 2 * MiB);
  // The quota may be met before the page ever shows "running": the job goes straight to its pause.
  await submitMirror(page, { source: 'demo.raw', target: 'copy.qcow2', targetFormat: 'qcow2', onTargetError: 'enospc' });
  await expect(jobState(page)).toContainText('Paused: out of space', { timeout: 30_000 });
  await expect(jobState(page)).toContainText('io-status nospace');
  await expect(page.locator('#stop-dialog')).toBeVisible();
  await expect(page.locator('#stop-text')).toContainText(/The browser's storage for this page is full: it reports .* used of the .* it allows this page/);
  await expect(page.locator('#stop-text')).toContainText('then press Resume.');
  await page.locator('#stop-close').click();

  // Space is freed: another image goes, and the job resumes.
  await page.getByRole('table').getByRole('button', { name: 'Delete ballast.raw' }).click();
  await expect(page.getByRole('rowheader', { name: 'ballast.raw', exact: true })).toBeHidden();
  await page.getByRole('button', { name: 'Resume', exact: true }).click();
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobOutcome(page)).toContainText('Done: copy.qcow2');

  await liftQuota(page, cdp);
  await saveImage(page, 'demo.raw', join(dir, 'demo.raw'));
  await saveImage(page, 'copy.qcow2', join(dir, 'copy.qcow2'));
  qemuImg('check', join(dir, 'copy.qcow2'));
  expect(qemuImg('compare', '-f', 'raw', '-F', 'qcow2', join(dir, 'demo.raw'), join(dir, 'copy.qcow2'))).toContain('Images are identical');
});

test('real quota under report: the job fails naming the storage and what to do; Retry only once space was freed; its partial target is a valid image', async ({ page, context }) => {
  await openApp(page);
  await makeDemo(page);
  await createBlank(page, 'ballast.raw', '8M', 'raw');
  const cdp = await quotaAbove(page, context, 2 * MiB);
  await submitMirror(page, { source: 'demo.raw', target: 'part.qcow2', targetFormat: 'qcow2', onTargetError: 'report' });
  const outcome = jobOutcome(page);
  await expect(outcome).toContainText('Failed at', { timeout: 30_000 });
  await expect(outcome).toContainText("ENOSPC); part.qcow2 is incomplete: the browser's storage ran out");
  // The sentence names the storage, what the browser reports used and left, and what to do.
  await expect(outcome).toContainText(/The browser's storage for this page is full: it reports .* used of the .* it allows this page, .* left/);
  await expect(outcome).toContainText('Delete images you no longer need');
  await expect(outcome).toContainText('Retry, offered here once something changed');
  // Nothing changed yet: Retry would meet the same wall.
  await expect(outcome.getByRole('button', { name: /^Retry / })).toHaveCount(0);
  await expect(outcome.getByRole('button', { name: 'Delete part.qcow2' })).toBeVisible();

  // Space freed: another image goes, and Retry is offered.
  await page.getByRole('table').getByRole('button', { name: 'Delete ballast.raw' }).click();
  await expect(page.getByRole('rowheader', { name: 'ballast.raw', exact: true })).toBeHidden();
  await expect(outcome.getByRole('button', { name: /^Retry / })).toBeVisible();
  await expect(outcome).toContainText('then press Retry');

  await liftQuota(page, cdp);
  await saveImage(page, 'part.qcow2', join(dir, 'part.qcow2'));
  // qemu-img check exits 0 for a clean image (leaks would be 3, corruptions 2).
  qemuImg('check', join(dir, 'part.qcow2'));
  expect(qemuImg('info', '--output=json', join(dir, 'part.qcow2'))).toContain('"virtual-size": 8388608');
});

test('Create never calls an image made that the storage cannot hold: a raw image past what is left is refused before it is made, naming the storage; a qcow2 of the same size is made', async ({ page, context }) => {
  await openApp(page);
  const cdp = await quotaAbove(page, context, 16 * MiB);
  await page.getByLabel('Image name').fill('big.raw');
  await page.getByLabel('Image size').fill('64M');
  await page.getByLabel('Image format').selectOption('raw');
  await page.getByRole('button', { name: 'Create image' }).click();
  await expect(page.locator('#images-message')).toContainText("The browser's storage cannot hold a raw image of 64.0 MiB");
  await expect(page.locator('#images-message')).toContainText('Make a qcow2 image instead (it grows only as data is written)');
  await expect(page.getByRole('rowheader', { name: 'big.raw', exact: true })).toBeHidden();
  await createBlank(page, 'big.qcow2', '64M', 'qcow2');
  // Beside its virtual size, what each image takes of the storage and the data it holds; the header, what the browser reports.
  const row = page.getByRole('row', { name: /big\.qcow2/ });
  await expect(row.getByRole('cell').nth(1)).toHaveText('64.0 MiB');
  await expect(row.getByRole('cell').nth(2)).toHaveText(/^\d+(\.\d+)? KiB \(data 0 bytes\)$/);
  await expect(page.locator('#storage')).toContainText(/^Storage: .* used of the .* the browser allows this page \(.* left\) · not persistent/);
  await liftQuota(page, cdp);
});

test('in a private window (storage in memory) a raw image of 3 GiB is not called made when the browser keeps less', async ({ page }) => {
  await openApp(page);
  await page.getByLabel('Image name').fill('a3.raw');
  await page.getByLabel('Image size').fill('3G');
  await page.getByLabel('Image format').selectOption('raw');
  await page.getByRole('button', { name: 'Create image' }).click();
  const message = page.locator('#images-message');
  await expect(message).not.toHaveText('');
  const said = await message.innerText();
  // Either the browser made all of it (and the list says 3.00 GiB), or the page says it could not: never a success for 0 bytes.
  if (said.startsWith('Created')) await expect(page.getByRole('row', { name: /a3\.raw/ })).toContainText('3.00 GiB');
  else {
    expect(said).toMatch(/^The browser (kept "a3\.raw" at .*, not 3\.00 GiB|'s storage cannot hold a raw image of 3\.00 GiB)/);
    await expect(page.getByRole('rowheader', { name: 'a3.raw', exact: true })).toBeHidden();
  }
});
