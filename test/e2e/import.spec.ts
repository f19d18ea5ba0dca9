/** Bringing images in: from a URL (Range requests, with failures) and from a picked file. */
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { test, expect } from './fixtures.js';
import { jobState, loggedEvents, openApp, opfsHash, shot } from './app.js';
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

test('Import from URL with failing Range requests: on-source-error ignore retries, the import is correct', async ({ page }, testInfo) => {
  failEvery = 3;
  await openApp(page);
  await page.getByLabel('On source error').selectOption('ignore');
  await page.getByLabel('Image URL').fill(server.url('disk.img'));
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await expect(jobState(page)).toContainText('— ready', { timeout: 60_000 });
  await shot(page, testInfo, 'url-import-ready');
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobState(page)).toContainText(/— (concluded|null)/);
  await expect(page.getByRole('rowheader', { name: 'disk.img', exact: true })).toBeVisible();
  await expect(page.getByText('Imported disk.img.')).toBeVisible();
  expect(server.failures).toBeGreaterThan(0);
  const errors = (await loggedEvents(page)).filter((e) => e.event === 'BLOCK_JOB_ERROR');
  expect(errors.length).toBeGreaterThan(0);
  expect(errors.every((e) => e.data.action === 'ignore' && e.data.operation === 'read')).toBe(true);
  expect(await opfsHash(page, 'disk.img')).toBe(expectedHash);
});

test('Import from URL under report fails on the first bad request, with the error shown', async ({ page }) => {
  failEvery = 2;
  await openApp(page);
  await page.getByLabel('Image URL').fill(server.url('disk.img'));
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'The job failed: Input/output error' })).toBeVisible({ timeout: 30_000 });
});

test('Import file: a picked file is copied into OPFS; it can also be a mirror source directly', async ({ page }) => {
  failEvery = 0;
  await openApp(page);
  const chooser = page.waitForEvent('filechooser');
  await page.getByRole('button', { name: 'Import file' }).click();
  await (await chooser).setFiles(join(dir, 'disk.img'));
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobState(page)).toContainText(/— (concluded|null)/);
  expect(await opfsHash(page, 'disk.img')).toBe(expectedHash);
  // The picked file is offered as a source.
  await expect(page.getByRole('combobox', { name: 'Source', exact: true }).getByRole('option', { name: 'picked file: disk.img' })).toBeAttached();
});

test('Download streams the image out of OPFS', async ({ page }, testInfo) => {
  await openApp(page);
  // The save picker needs a person; the test takes the download-link path.
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await page.reload();
  await page.getByRole('button', { name: 'New demo image' }).click();
  const download = page.waitForEvent('download');
  await page.getByRole('button', { name: 'Download demo.raw' }).click();
  const path = testInfo.outputPath('demo.raw');
  await (await download).saveAs(path);
  const bytes = readFileSync(path);
  expect(bytes.length).toBe(8 << 20);
  expect(createHash('sha256').update(bytes).digest('hex')).toBe(await opfsHash(page, 'demo.raw'));
});
