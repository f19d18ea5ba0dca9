/** The app as a person uses it: the demo, guest writes, reload and resume, offline. */
import { test, expect } from './fixtures.js';
import { jobState, loggedEvents, makeDemo, openApp, opfsHash, shot, startMirror, waitReadyAndComplete } from './app.js';

test('the demo image mirrored to a new image; progress reaches 100%; bytes equal', async ({ page }, testInfo) => {
  await openApp(page);
  await shot(page, testInfo, 'empty');
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw' });
  await expect(jobState(page)).toContainText('— ready');
  await expect(page.getByRole('progressbar', { name: 'Mirror progress' })).toHaveAttribute('aria-valuenow', '100');
  await shot(page, testInfo, 'ready');
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'copy.raw')).toBe(await opfsHash(page, 'demo.raw'));
  await expect(page.getByRole('img', { name: 'Dirty bitmap' })).toHaveAttribute('aria-description', /copied/);
});

test('Pause, Resume and Cancel act on a running job; buttons follow the verb table', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'slow.raw', speed: '1M' });
  const button = (name: string) => page.getByRole('button', { name, exact: true });
  await expect(button('Complete')).toBeDisabled();
  await button('Pause').click();
  await expect(jobState(page)).toContainText('— paused');
  await expect(button('Pause')).toBeDisabled();
  await expect(button('Resume')).toBeEnabled();
  await button('Resume').click();
  await expect(jobState(page)).toContainText('— running');
  await button('Cancel').click();
  await expect(jobState(page)).toContainText(/— (concluded|null)/);
  expect((await loggedEvents(page)).map((e) => e.event)).toContain('BLOCK_JOB_CANCELLED');
  for (const name of ['Pause', 'Resume', 'Complete', 'Cancel', 'Force cancel']) await expect(button(name)).toBeDisabled();
});

test('guest writes during a mirror, then Complete: the target equals the source', async ({ page }, testInfo) => {
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'live.raw', speed: '8M' });
  await page.getByLabel('Guest write rate').fill('1M');
  await page.getByRole('switch', { name: 'Guest writes' }).check();
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  await page.waitForTimeout(1500); // the guest keeps writing while the job is ready
  await shot(page, testInfo, 'guest-writing');
  await expect(page.locator('#job-stats')).toContainText('Guest');
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobState(page)).toContainText(/— (concluded|null)/);
  expect(await opfsHash(page, 'live.raw')).toBe(await opfsHash(page, 'demo.raw'));
});

test('reload mid-job: the job is listed as interrupted and resumes without recopying clean chunks', async ({ page }, testInfo) => {
  await openApp(page);
  await makeDemo(page);
  // 6 MiB of data at 1 MiB/s: about 6 s. Reload after the first periodic checkpoint (2 s), well before the end.
  await startMirror(page, { source: 'demo.raw', target: 'resumed.raw', speed: '1M' });
  await page.waitForTimeout(2800);
  await expect(jobState(page)).toContainText('— running');
  await page.reload();
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
  const item = page.getByRole('list').filter({ hasText: 'resumed.raw' });
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible();
  await shot(page, testInfo, 'interrupted');
  await page.getByLabel('Speed limit').fill('');
  await item.getByRole('button', { name: 'Resume interrupted job mirror0' }).click();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'resumed.raw')).toBe(await opfsHash(page, 'demo.raw'));
  const ready = (await loggedEvents(page)).find((e) => e.event === 'BLOCK_JOB_READY');
  // The resumed job copied only what was still dirty: less than the 8 MiB a restart would.
  expect(Number(ready?.data.len)).toBeGreaterThan(0);
  expect(Number(ready?.data.len)).toBeLessThan(8 << 20);
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
});

test('offline: after a first visit the app loads and mirrors with the network cut', async ({ page, context }, testInfo) => {
  await openApp(page);
  // The service worker has cached the shell once it is active.
  await page.waitForFunction(async () => (await navigator.serviceWorker.ready).active?.state === 'activated');
  await context.setOffline(true);
  await page.reload();
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'offline.raw' });
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'offline.raw')).toBe(await opfsHash(page, 'demo.raw'));
  await shot(page, testInfo, 'offline');
  await context.setOffline(false);
});
