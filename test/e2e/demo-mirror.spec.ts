import { test, expect } from './fixtures.js';

test('demo image mirrored to a new OPFS file through the UI; target equals source', async ({ page }, testInfo) => {
  await page.goto('/');
  await page.getByRole('button', { name: 'New demo image' }).click();
  await expect(page.getByRole('cell', { name: 'demo.raw', exact: true })).toBeVisible();

  await page.getByLabel('Source').selectOption('demo.raw');
  await page.getByLabel('Target').fill('copy.raw');
  await page.getByRole('button', { name: 'Start mirror' }).click();

  const progress = page.getByRole('progressbar', { name: 'Mirror progress' });
  const state = page.getByRole('status', { name: 'Job state' });
  await expect(state).toContainText('ready');
  await expect(progress).toHaveAttribute('aria-valuenow', '100');
  await page.screenshot({ path: testInfo.outputPath('ready.png') });

  await page.getByRole('button', { name: 'Complete' }).click();
  await expect(state).toContainText(/concluded|null/);
  await expect(page.getByRole('log', { name: 'Events' })).toContainText('BLOCK_JOB_COMPLETED');

  // Compare the bytes inside the page, through OPFS.
  const [a, b] = await page.evaluate(async () => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('images');
    const hash = async (name: string) => {
      const file = await (await dir.getFileHandle(name)).getFile();
      const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
      return [...new Uint8Array(digest)].map((x) => x.toString(16).padStart(2, '0')).join('');
    };
    return [await hash('demo.raw'), await hash('copy.raw')];
  });
  expect(b).toBe(a);
  await expect(progress).toHaveAttribute('aria-valuenow', '100');
});

test('Pause, Resume and Cancel act on a running job', async ({ page }) => {
  await page.goto('/');
  await page.getByRole('button', { name: 'New demo image' }).click();
  await expect(page.getByRole('cell', { name: 'demo.raw', exact: true })).toBeVisible();
  await page.getByLabel('Target').fill('slow-copy.raw');
  // A slow job, so the buttons have something to act on: 1 MiB/s over 8 MiB.
  await page.getByLabel('Speed limit').fill('1M');
  await page.getByRole('button', { name: 'Start mirror' }).click();
  const state = page.getByRole('status', { name: 'Job state' });
  await expect(state).toContainText(/running|ready/);
  await page.getByRole('button', { name: 'Pause' }).click();
  await expect(state).toContainText('paused');
  await page.getByRole('button', { name: 'Resume' }).click();
  await expect(state).toContainText(/running|ready/);
  await page.getByRole('button', { name: 'Cancel' }).click();
  await expect(state).toContainText(/concluded|null/);
  await expect(page.getByRole('log', { name: 'Events' })).toContainText(/BLOCK_JOB_CANCELLED|BLOCK_JOB_COMPLETED/);
});
