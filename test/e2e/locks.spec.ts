/**
 * Who may touch an image, in the app: a job holds its images (Web Locks)
 * for its whole life; a second job, a delete or a download that would meet
 * them is refused with the lock's message and nothing changes; a job whose
 * target is its source (or in its backing chain) is refused; a resume onto
 * an image that changed since its checkpoint is refused.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { test, expect } from './fixtures.js';
import { addFault, createBlank, formError, jobOutcome, waitImported, imagesMessage, interruptedError, jobState, makeDemo, openApp, opfsHash, opfsNames, scribble, shot, startMirror, submitMirror, waitReadyAndComplete } from './app.js';
import { startFileServer, type FileServer } from '../helpers/file-server.js';

const button = (page: Page, name: string) => page.getByRole('button', { name, exact: true });
const row = (page: Page, name: string) => page.getByRole('row', { name: new RegExp(`^${name.replace(/\./g, '\\.')}\\b`) });

async function hashes(page: Page, names: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of names) out[name] = await opfsHash(page, name);
  return out;
}

test('a second job meets a running job\'s locks: refused with the lock message; no image changes', async ({ page }, testInfo) => {
  await openApp(page);
  await makeDemo(page);
  await createBlank(page, 'other.raw', '8M', 'raw');
  await startMirror(page, { source: 'demo.raw', target: 'held.raw', speed: '512K' });
  // Paused, the running job writes nothing, so every hash must stay as it is.
  await button(page, 'Pause').click();
  await expect(jobState(page)).toContainText('— paused');
  const before = await hashes(page, ['demo.raw', 'held.raw', 'other.raw']);
  const namesBefore = await opfsNames(page);

  // The running job reads demo.raw: nobody may write it.
  await submitMirror(page, { source: 'other.raw', target: 'demo.raw' });
  await expect(formError(page)).toHaveText('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');
  // It writes held.raw: nobody may read it, nor write it.
  await submitMirror(page, { source: 'held.raw', target: 'fresh.raw' });
  await expect(formError(page)).toHaveText('held.raw is in use by mirror0 (its target): wait until it ends, or choose another image.');
  await submitMirror(page, { source: 'other.raw', target: 'held.raw' });
  await expect(formError(page)).toHaveText('held.raw is in use by mirror0 (its target): wait until it ends, or choose another image.');
  // The demo image cannot be made again over the one the job reads.
  await page.getByRole('button', { name: 'New demo image' }).click();
  await expect(imagesMessage(page)).toHaveText('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');

  expect(await hashes(page, ['demo.raw', 'held.raw', 'other.raw'])).toEqual(before);
  // No target was made, not even a temporary file.
  expect(await opfsNames(page)).toEqual(namesBefore);
  await expect(row(page, 'held.raw')).toContainText('target of mirror0');
  await expect(row(page, 'demo.raw')).toContainText('source of mirror0');
  await expect(row(page, 'other.raw')).not.toContainText(/in use|of mirror|being imported/);
  await shot(page, testInfo, 'refused-second-job');

  // A second job that only reads what the first reads may run beside it.
  await startMirror(page, { source: 'demo.raw', target: 'beside.raw' });
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'beside.raw')).toBe(before['demo.raw']);

  // The first job goes on as if nothing happened.
  await page.getByRole('combobox', { name: 'Job', exact: true }).selectOption('mirror0');
  await page.getByLabel('Speed limit').fill('');
  await page.getByLabel('Speed limit').dispatchEvent('change');
  await button(page, 'Resume').click();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'held.raw')).toBe(before['demo.raw']);
  await expect(row(page, 'held.raw')).not.toContainText(/in use|of mirror|being imported/);
});

test('a job whose target is its own source is refused; the image is untouched', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  const before = await opfsHash(page, 'demo.raw');
  await submitMirror(page, { source: 'demo.raw', target: 'demo.raw' });
  await expect(formError(page)).toHaveText('demo.raw is both the source and the target (the same file): refusing to write to it; nothing was written.');
  await expect(jobState(page)).toHaveText('No job yet');
  expect(await opfsHash(page, 'demo.raw')).toBe(before);
  expect(await opfsNames(page)).toEqual(['demo.raw']);
});

test.describe('backing chains', () => {
  let dir: string;
  let server: FileServer;
  test.beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'diskmirror-e2e-locks-'));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '4M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 0 4M', join(dir, 'base.qcow2')]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'over.qcow2')]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x62 1M 256K', join(dir, 'over.qcow2')]);
    server = await startFileServer(dir);
  });
  test.afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("a job whose target is in its source's backing chain is refused; the backing file is untouched", async ({ page }) => {
    await openApp(page);
    for (const name of ['base.qcow2', 'over.qcow2']) {
      await page.getByLabel('Image URL').fill(server.url(name));
      await page.getByRole('button', { name: 'Import from URL' }).click();
      await waitImported(page, name);
    }
    const before = await hashes(page, ['base.qcow2', 'over.qcow2']);
    await submitMirror(page, { source: 'over.qcow2', target: 'base.qcow2' });
    await expect(formError(page)).toHaveText(
      'base.qcow2 is the backing file of the source over.qcow2: writing it would change what the source reads; refusing; nothing was written.',
    );
    expect(await hashes(page, ['base.qcow2', 'over.qcow2'])).toEqual(before);
  });
});

test('Delete and Download of an image a running job holds are refused before any dialog; another tab is refused too', async ({ page, context }) => {
  await openApp(page);
  let dialogs = 0;
  page.on('dialog', () => dialogs++);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'busy.raw', speed: '512K' });
  await page.getByRole('table').getByRole('button', { name: 'Delete busy.raw' }).click();
  await expect(imagesMessage(page)).toHaveText('busy.raw is in use by mirror0 (its target): wait until it ends, or choose another image.');
  await page.getByRole('table').getByRole('button', { name: 'Delete demo.raw' }).click();
  await expect(imagesMessage(page)).toHaveText('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');
  await page.getByRole('table').getByRole('button', { name: 'Download busy.raw' }).click();
  await expect(imagesMessage(page)).toHaveText('busy.raw is in use by mirror0 (its target): wait until it ends, or choose another image.');
  expect(dialogs).toBe(0);
  await expect(page.getByRole('rowheader', { name: 'busy.raw', exact: true })).toBeVisible();
  expect(await opfsNames(page)).toEqual(['busy.raw', 'demo.raw']);

  // Another tab of the app sees the same locks.
  const other = await context.newPage();
  let otherDialogs = 0;
  other.on('dialog', (d) => {
    otherDialogs++;
    void d.dismiss();
  });
  await other.goto('/');
  await expect(other.locator('body[data-ready="true"]')).toBeAttached();
  await expect(row(other, 'busy.raw')).toContainText('in use by the job "mirror0" in another tab');
  await other.getByRole('table').getByRole('button', { name: 'Delete busy.raw' }).click();
  await expect(imagesMessage(other)).toHaveText('busy.raw is in use by mirror0 in another tab: wait until it ends, or choose another image.');
  await submitMirror(other, { source: 'demo.raw', target: 'busy.raw' });
  await expect(formError(other)).toHaveText('busy.raw is in use by mirror0 in another tab: wait until it ends, or choose another image.');
  expect(otherDialogs).toBe(0);
  await other.close();

  // Once the job is over, the image can go (after a confirm).
  await button(page, 'Force cancel').click();
  await expect(jobState(page)).toContainText('— cancelled');
  await expect(row(page, 'busy.raw')).not.toContainText(/in use|of mirror|being imported/);
  await page.getByRole('table').getByRole('button', { name: 'Delete busy.raw' }).click();
  await expect(page.getByRole('rowheader', { name: 'busy.raw', exact: true })).toBeHidden();
  expect(dialogs).toBe(1);
});

test("two tabs: the second sees the first one's job holding its images; when the first tab closes, the second resumes its job", async ({ page, context }) => {
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'handed.raw', speed: '1M' });
  // Past the first periodic checkpoint, well before the end (8 MiB at 1 MiB/s).
  await page.waitForTimeout(2800);
  await expect(jobState(page)).toContainText('— running');

  const second = await context.newPage();
  second.on('dialog', (d) => void d.accept());
  await second.goto('/');
  await expect(second.locator('body[data-ready="true"]')).toBeAttached();
  await expect(row(second, 'handed.raw')).toContainText('in use by the job "mirror0" in another tab');
  await submitMirror(second, { source: 'demo.raw', target: 'handed.raw' });
  await expect(formError(second)).toHaveText('handed.raw is in use by mirror0 in another tab: wait until it ends, or choose another image.');
  await expect(second.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();

  // The first tab goes away mid-job: its locks go with it, and the second tab notices by itself.
  await page.close();
  await expect(second.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible({ timeout: 15_000 });
  await expect(row(second, 'handed.raw')).not.toContainText('in another tab');
  await second.getByLabel('Speed limit').fill('');
  await second.getByRole('list').filter({ hasText: 'handed.raw' }).getByRole('button', { name: 'Resume interrupted job mirror0' }).click();
  await waitReadyAndComplete(second);
  expect(await opfsHash(second, 'handed.raw')).toBe(await opfsHash(second, 'demo.raw'));
  await expect(second.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
});

/** Starts a slow mirror, lets it checkpoint, and reloads the page mid-job (the tab's worker dies with it). */
async function interruptMirror(page: Page, target: string): Promise<void> {
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target, speed: '1M' });
  await page.waitForTimeout(2800);
  await expect(jobState(page)).toContainText('— running');
  await page.reload();
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible();
}

test('a resume onto a source changed after the interruption is refused, naming what changed', async ({ page }, testInfo) => {
  await openApp(page);
  await interruptMirror(page, 'resumed.raw');
  await scribble(page, 'demo.raw', 4096, [1, 2, 3, 4]);
  const target = await opfsHash(page, 'resumed.raw');
  await page.getByRole('button', { name: 'Resume interrupted job mirror0' }).click();
  await expect(interruptedError(page)).toContainText(/^Cannot resume: the source demo\.raw was modified at .* UTC, after the checkpoint \(.* UTC\); discard the interrupted job and mirror again/);
  await shot(page, testInfo, 'resume-refused');
  expect(await opfsHash(page, 'resumed.raw')).toBe(target);
  await expect(jobState(page)).toHaveText('No job yet');
  // It stays listed, to be discarded.
  await page.getByRole('button', { name: 'Discard interrupted job mirror0' }).click();
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
});

test('a resume onto a target written after the job stopped is refused', async ({ page }) => {
  await openApp(page);
  await interruptMirror(page, 'resumed.raw');
  // Written well after the job's heartbeat stopped (the job's own late writes fall inside its slack).
  await page.waitForTimeout(2500);
  await scribble(page, 'resumed.raw', 0, [9, 9, 9, 9]);
  await page.getByRole('button', { name: 'Resume interrupted job mirror0' }).click();
  await expect(interruptedError(page)).toContainText(/^Cannot resume: the target resumed\.raw was modified at .* UTC, after the job stopped \(.* UTC\)/);
  await page.getByRole('button', { name: 'Discard interrupted job mirror0' }).click();
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
});

test("a failed job's sealed checkpoint resumes exactly; once its target changed, the resume is refused", async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'sealed.raw', speed: '2M', onTargetError: 'report' });
  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '5M', length: '', once: false });
  await expect(jobOutcome(page)).toContainText('Failed at 5.00 MiB: target write error (EIO); sealed.raw is incomplete', { timeout: 20_000 });
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Resume interrupted job mirror0' })).toBeEnabled();
  // A failed job's checkpoint is sealed once its images are closed: nothing may change after that, not even within
  // the slack an unsealed checkpoint gives the job's own late writes (this write comes well inside it).
  await expect(row(page, 'sealed.raw')).not.toContainText(/in use|of mirror|being imported/);
  await scribble(page, 'sealed.raw', 0, [7]);
  const scribbled = await opfsHash(page, 'sealed.raw');
  await page.getByRole('button', { name: 'Resume interrupted job mirror0' }).click();
  await expect(interruptedError(page)).toContainText(/^Cannot resume: the target sealed\.raw was modified at .* UTC, after the checkpoint/);
  expect(await opfsHash(page, 'sealed.raw')).toBe(scribbled);
  await page.getByRole('button', { name: 'Discard interrupted job mirror0' }).click();

  // The same failure with the target left alone: the resume is accepted and completes.
  await startMirror(page, { source: 'demo.raw', target: 'sealed2.raw', speed: '2M', onTargetError: 'report' });
  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '5M', length: '', once: false });
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible({ timeout: 20_000 });
  await expect(row(page, 'sealed2.raw')).not.toContainText(/in use|of mirror|being imported/);
  // The seal's stamps are what a resume finds: closing the images changed nothing the exact check sees.
  await page.getByRole('button', { name: /^Resume interrupted job mirror/ }).click();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'sealed2.raw')).toBe(await opfsHash(page, 'demo.raw'));
});

test('a job that ends having written nothing removes the target it made', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  // sync none copies nothing by itself: cancelled at once, the new target holds no byte of the job's.
  await startMirror(page, { source: 'demo.raw', target: 'empty.raw', sync: 'none' });
  await expect(page.getByRole('rowheader', { name: 'empty.raw', exact: true })).toBeVisible();
  await button(page, 'Force cancel').click();
  await expect(jobState(page)).toContainText('— cancelled');
  await expect(page.getByRole('rowheader', { name: 'empty.raw', exact: true })).toBeHidden();
  expect(await opfsNames(page)).toEqual(['demo.raw']);
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
});
