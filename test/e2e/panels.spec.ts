/** The smaller promises of the page: drag and drop, delete, picked files as sources, copying the log, live speed. */
import { test, expect } from './fixtures.js';
import { jobState, makeDemo, waitImported, openApp, opfsHash, startMirror, waitReadyAndComplete } from './app.js';

test('a file dropped on the images section is imported; Delete removes an image', async ({ page }) => {
  await openApp(page);
  const bytes = Array.from({ length: 300_000 }, (_, i) => (i * 31 + (i >> 9)) & 0xff);
  const drop = await page.evaluateHandle((data) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(data)], 'dropped.img'));
    return dt;
  }, bytes);
  await page.locator('#images-section').dispatchEvent('dragover', { dataTransfer: drop });
  await page.locator('#images-section').dispatchEvent('drop', { dataTransfer: drop });
  await waitImported(page, 'dropped.img');
  await expect(page.getByRole('rowheader', { name: 'dropped.img', exact: true })).toBeVisible();
  const expected = await page.evaluate(async (data) => {
    const digest = await crypto.subtle.digest('SHA-256', new Uint8Array(data));
    return [...new Uint8Array(digest)].map((x) => x.toString(16).padStart(2, '0')).join('');
  }, bytes);
  expect(await opfsHash(page, 'dropped.img')).toBe(expected);
  await page.getByRole('table').getByRole('button', { name: 'Delete dropped.img' }).click();
  await expect(page.getByRole('rowheader', { name: 'dropped.img', exact: true })).toBeHidden();
});

test('a picked file mirrors straight into a new qcow2 image', async ({ page }) => {
  await openApp(page);
  const chooser = page.waitForEvent('filechooser');
  await page.getByRole('button', { name: 'Import file' }).click();
  const data = Buffer.alloc(2 << 20, 0x42);
  await (await chooser).setFiles({ name: 'picked.img', mimeType: 'application/octet-stream', buffer: data });
  await waitImported(page, 'picked.img');
  await startMirror(page, { source: 'picked file: picked.img', target: 'from-picked.qcow2', targetFormat: 'qcow2' });
  await waitReadyAndComplete(page);
  await expect(page.getByRole('row', { name: /from-picked\.qcow2/ }).getByRole('cell', { name: 'qcow2', exact: true })).toBeVisible();
});

test('the speed limit changes live; Copy as JSON lines copies the log', async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '512K' });
  await expect(page.locator('#job-stats')).toContainText('512 KiB/s');
  await page.getByLabel('Speed limit').fill('3M');
  await page.getByLabel('Speed limit').press('Enter');
  await expect(page.locator('#job-stats')).toContainText('3.00 MiB/s');
  await page.getByLabel('Speed limit').fill('');
  await page.getByLabel('Speed limit').dispatchEvent('change');
  await waitReadyAndComplete(page);
  await page.getByRole('button', { name: 'Copy as JSON lines' }).click();
  await expect(page.getByText(/Copied \d+ events/)).toBeVisible();
  const text = await page.evaluate(() => navigator.clipboard.readText());
  const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { event: string });
  expect(lines.map((l) => l.event)).toContain('BLOCK_JOB_COMPLETED');
  expect(lines.every((l) => typeof l.event === 'string')).toBe(true);
});

test('progress reaches the page at most about 10 times a second', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  // Count progress renders: aria-valuetext changes on each update.
  await page.evaluate(() => {
    const bar = document.getElementById('progress')!;
    (window as unknown as { updates: number }).updates = 0;
    new MutationObserver(() => (window as unknown as { updates: number }).updates++).observe(bar, { attributes: true, attributeFilter: ['aria-valuetext'] });
  });
  const start = Date.now();
  await startMirror(page, { source: 'demo.raw', target: 'slow.raw', speed: '2M' });
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  const seconds = (Date.now() - start) / 1000;
  const updates = await page.evaluate(() => (window as unknown as { updates: number }).updates);
  expect(seconds).toBeGreaterThan(2);
  // ~10 a second from the copy, plus one per status change.
  expect(updates).toBeLessThanOrEqual(Math.ceil(seconds * 10) + 10);
  expect(updates).toBeGreaterThan(5);
});
