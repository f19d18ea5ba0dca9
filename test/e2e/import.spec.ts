/**
 * Bringing images in: from a URL (Range requests, with failures; a server
 * without CORS) and from a picked file. An import completes by itself and
 * its image is a mirror source the moment it ends.
 */
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { test, expect } from './fixtures.js';
import { imagesMessage, jobOutcome, jobState, loggedEvents, openApp, opfsHash, shot, startMirror, waitImported, waitReadyAndComplete } from './app.js';
import { startFileServer, type FileServer } from '../helpers/file-server.js';
import { pattern } from '../contract/device-contract.js';

let dir: string;
let server: FileServer;
let expectedHash: string;
const SIZE = 6 * 1024 * 1024 + 4096;
let failEvery = 0;

test.beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-e2e-files-'));
  const data = pattern(SIZE, 77);
  data.fill(0, 1 << 20, 2 << 20);
  writeFileSync(join(dir, 'disk.img'), data);
  expectedHash = createHash('sha256').update(data).digest('hex');
  // Fails every few ranged requests with a 503 or a dropped connection, when asked to.
  server = await startFileServer(dir, {
    fail: ({ count }) => (failEvery > 0 && count % failEvery === 0 ? (count % 2 ? 503 : 'reset') : null),
  });
});
test.afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The image is free and a mirror from it copies it whole. */
async function mirrorsFrom(page: import('@playwright/test').Page, name: string): Promise<void> {
  await expect(page.getByRole('row', { name: new RegExp(`^${name.replace('.', '\\.')}`) }).getByRole('cell').nth(4)).toHaveText('');
  await startMirror(page, { source: name, target: 'again.raw' });
  await waitReadyAndComplete(page);
  await expect(jobOutcome(page)).toContainText('Done: again.raw (raw, 6.00 MiB)');
  expect(await opfsHash(page, 'again.raw')).toBe(expectedHash);
}

test('Import from URL with failing Range requests: retried by default (ignore), completes by itself, mirrorable at once', async ({ page }, testInfo) => {
  failEvery = 3;
  await openApp(page);
  // The mirror form's policy and speed are not the import's.
  await page.getByLabel('On source error').selectOption('report');
  await page.getByLabel('Speed limit').fill('64K');
  await page.getByLabel('Image URL').fill(server.url('disk.img'));
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await expect(jobState(page)).toContainText('— completed, the image is imported', { timeout: 60_000 });
  await expect(jobOutcome(page)).toContainText('Done: disk.img (raw, 6.00 MiB)');
  await shot(page, testInfo, 'url-import-done');
  await expect(page.getByRole('rowheader', { name: 'disk.img', exact: true })).toBeVisible();
  await expect(imagesMessage(page)).toHaveText('Imported disk.img: it is ready to mirror.');
  expect(server.failures).toBeGreaterThan(0);
  const errors = (await loggedEvents(page)).filter((e) => e.event === 'BLOCK_JOB_ERROR');
  expect(errors.length).toBeGreaterThan(0);
  expect(errors.every((e) => e.data.action === 'ignore' && e.data.operation === 'read')).toBe(true);
  expect(await opfsHash(page, 'disk.img')).toBe(expectedHash);
  await page.getByLabel('Speed limit').fill('');
  await mirrorsFrom(page, 'disk.img');
});

test('Import from URL told to fail the import (report) fails on the first bad request: its sentence, a red bar, Delete and Retry', async ({ page }) => {
  failEvery = 2;
  await openApp(page);
  await page.getByLabel('Image URL').fill(server.url('disk.img'));
  await page.getByLabel('If a request fails').selectOption('report');
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await expect(jobOutcome(page)).toContainText(/^Failed at [\d.]+ (KiB|MiB|bytes): source read error \(EIO\); /, { timeout: 30_000 });
  await expect(page.locator('#progress')).toHaveClass(/failed/);
  await expect(jobOutcome(page).getByRole('button', { name: 'Retry mirror0' })).toBeVisible();
});

test('Import from a server without CORS headers: the sentence says what the server must do', async ({ page }) => {
  const plain = await startFileServer(dir, { cors: false });
  try {
    await openApp(page);
    await page.getByLabel('Image URL').fill(plain.url('disk.img'));
    await page.getByRole('button', { name: 'Import from URL' }).click();
    await expect(imagesMessage(page)).toHaveText(
      `The server did not allow this page to read ${plain.url('disk.img')}: it must send CORS headers (Access-Control-Allow-Origin) and answer Range requests. Check the address too.`,
    );
    await expect(imagesMessage(page)).toHaveClass(/error/);
    // Nothing was made, and the next action clears the error.
    await expect(page.getByRole('rowheader', { name: 'disk.img', exact: true })).toHaveCount(0);
    await page.getByRole('button', { name: 'New demo image' }).click();
    await expect(imagesMessage(page)).not.toHaveClass(/error/);
  } finally {
    await plain.close();
  }
});

test('Import file: a picked file is copied into OPFS by itself, mirrorable at once; it can also be a mirror source directly', async ({ page }) => {
  failEvery = 0;
  await openApp(page);
  const chooser = page.waitForEvent('filechooser');
  await page.getByRole('button', { name: 'Import file' }).click();
  await (await chooser).setFiles(join(dir, 'disk.img'));
  await expect(jobState(page)).toContainText('— completed, the image is imported', { timeout: 30_000 });
  await expect(jobOutcome(page)).toContainText('Done: disk.img (raw, 6.00 MiB)');
  expect(await opfsHash(page, 'disk.img')).toBe(expectedHash);
  await mirrorsFrom(page, 'disk.img');
  // The picked file is offered as a source.
  await expect(page.getByRole('combobox', { name: 'Source', exact: true }).getByRole('option', { name: 'picked file: disk.img' })).toBeAttached();
});

test('A URL import cut off by a reload resumes by itself where it stopped, and finishes', async ({ page }) => {
  failEvery = 0;
  const slow = await startFileServer(dir, { delayMs: () => 300 });
  try {
    await openApp(page);
    await page.getByLabel('Image URL').fill(slow.url('disk.img'));
    await page.getByRole('button', { name: 'Import from URL' }).click();
    await expect(jobState(page)).toContainText('Importing');
    await expect.poll(() => slow.rangedRequests).toBeGreaterThan(4);
    await page.reload();
    await expect(page.locator('body[data-ready="true"]')).toBeAttached();
    await expect(imagesMessage(page)).toHaveText(/^The import of disk\.img resumed by itself where it stopped \(mirror\d+\)\.$/);
    await expect(page.getByRole('heading', { name: /^Job mirror\d+: import of .*disk\.img as disk\.img$/ })).toBeVisible();
    await waitImported(page, 'disk.img');
    await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
    expect(await opfsHash(page, 'disk.img')).toBe(expectedHash);
  } finally {
    await slow.close();
  }
});

test('A job reading a picked file, cut off by a reload, asks for the file again, says so, and resumes with it', async ({ page }, testInfo) => {
  // Imports take no speed limit, so a small file is imported before anyone could reload: a mirror from the
  // picked file (the same path: a job whose source is a file this page no longer holds) is held back by its limit.
  const big = join(dir, 'big.img');
  const data = pattern(8 << 20, 5);
  writeFileSync(big, data);
  const bigHash = createHash('sha256').update(data).digest('hex');
  await openApp(page);
  const chooser = page.waitForEvent('filechooser');
  await page.getByRole('button', { name: 'Import file' }).click();
  await (await chooser).setFiles(big);
  await waitImported(page, 'big.img');
  await startMirror(page, { source: 'picked file: big.img', target: 'from-file.raw', speed: '1M' });
  await expect(page.locator('#job-stats')).toContainText('Speed limit1.00 MiB/s');
  await page.reload();
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
  const item = page.getByRole('listitem').filter({ hasText: 'picked file big.img → from-file.raw' });
  await expect(item).toContainText('It reads the file big.img, which this page no longer holds: pick the same file again to resume.');
  await expect(page.getByRole('row', { name: /^from-file\.raw/ }).getByRole('cell').nth(4)).toHaveText(/^incomplete: mirror\d+ was interrupted$/);
  await shot(page, testInfo, 'pick-file-again');
  // Another file is refused, by name.
  let pick = page.waitForEvent('filechooser');
  await item.getByRole('button', { name: /^Pick big\.img to resume mirror\d+$/ }).click();
  await (await pick).setFiles(join(dir, 'disk.img'));
  await expect(page.locator('#interrupted-error')).toHaveText(/^The job "mirror\d+" reads "big\.img", not "disk\.img"\.$/);
  pick = page.waitForEvent('filechooser');
  await item.getByRole('button', { name: /^Pick big\.img to resume mirror\d+$/ }).click();
  await (await pick).setFiles(big);
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobOutcome(page)).toContainText('Done: from-file.raw (raw, 8.00 MiB)');
  expect(await opfsHash(page, 'from-file.raw')).toBe(bigHash);
});

test('Download streams the image out of OPFS', async ({ page }, testInfo) => {
  await openApp(page);
  // The save picker needs a person; the test takes the download-link path.
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await page.reload();
  await page.getByRole('button', { name: 'New demo image' }).click();
  const download = page.waitForEvent('download');
  await page.getByRole('table').getByRole('button', { name: 'Download demo.raw' }).click();
  const path = testInfo.outputPath('demo.raw');
  await (await download).saveAs(path);
  const bytes = readFileSync(path);
  expect(bytes.length).toBe(8 << 20);
  expect(createHash('sha256').update(bytes).digest('hex')).toBe(await opfsHash(page, 'demo.raw'));
});

test('a URL answered 404 says what the server answered; a text file named .qcow2 is imported as raw with a warning naming both formats', async ({ page }) => {
  failEvery = 0;
  await openApp(page);
  await page.getByLabel('Image URL').fill(server.url('missing.qcow2'));
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await expect(imagesMessage(page)).toHaveText(`The server answered HTTP 404 for ${server.url('missing.qcow2')}: there is no file at that address: check the URL.`);
  writeFileSync(join(dir, 'bad.qcow2'), 'this is a text file, not a disk\n');
  const chooser = page.waitForEvent('filechooser');
  await page.getByRole('button', { name: 'Import file' }).click();
  await (await chooser).setFiles(join(dir, 'bad.qcow2'));
  await expect(imagesMessage(page)).toHaveText(
    'Imported bad.qcow2: it is ready to mirror. Its name says qcow2, but its content is raw: it is kept as raw (qemu-img reads it so too); rename it, or check the file.',
    { timeout: 30_000 },
  );
});
