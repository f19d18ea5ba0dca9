/** The app as a person uses it: the demo, guest writes, reload and resume, offline. */
import { test, expect } from './fixtures.js';
import { createBlank, download, interruptedError, jobState, loggedEvents, makeDemo, openApp, opfsHash, shot, startMirror, waitReadyAndComplete } from './app.js';
import { qemuCheck, qemuCompare, requireQemu, tempDir } from '../helpers/qemu.js';

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
  await expect(jobState(page)).toContainText('— cancelled');
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
  await expect(jobState(page)).toContainText('— completed, the target equals the source');
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

test('a guest writing an OPFS qcow2 when the tab closes: the resume is refused, a fresh mirror copies what the source holds; stopped in time, the resume continues', async ({ page }, testInfo) => {
  test.setTimeout(180_000);
  requireQemu();
  const dir = tempDir('diskmirror-guest-crash-');
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  await createBlank(page, 'guest.qcow2', '8M', 'qcow2');
  const guest = page.getByRole('switch', { name: 'Guest writes' });
  const interrupted = page.getByRole('heading', { name: 'Interrupted jobs' });
  const resume = page.getByRole('button', { name: /^Resume interrupted job mirror\d+$/ });
  /** Downloads both images and asks qemu-img whether the target holds what the source does. */
  const compare = async (target: string) => {
    await download(page, 'guest.qcow2', dir.file('source.qcow2'));
    await download(page, target, dir.file(target));
    const same = await qemuCompare(dir.file('source.qcow2'), dir.file(target));
    expect(same.code, same.stdout + same.stderr).toBe(0);
    expect((await qemuCheck(dir.file(target))).code).toBe(0);
  };
  try {
    // The guest writes (allocating clusters of the qcow2 source) right up to the moment the tab goes.
    await startMirror(page, { source: 'guest.qcow2', target: 'first.qcow2', speed: '1M' });
    await page.getByLabel('Guest write rate').fill('2M');
    await guest.check();
    await page.waitForTimeout(3000);
    await page.reload();
    await expect(page.locator('body[data-ready="true"]')).toBeAttached();
    await expect(interrupted).toBeVisible();
    await resume.click();
    // What the guest wrote since the last checkpoint may be lost or half there: that checkpoint cannot tell.
    await expect(interruptedError(page)).toContainText(/^Cannot resume: (a guest was writing the source guest\.qcow2 after the last checkpoint|the source guest\.qcow2 (was modified at .*, after the checkpoint|changed))/);
    await shot(page, testInfo, 'guest-resume-refused');
    await page.getByRole('button', { name: /^Discard interrupted job mirror\d+$/ }).click();
    await expect(interrupted).toBeHidden();
    await startMirror(page, { source: 'guest.qcow2', target: 'again.qcow2' });
    await waitReadyAndComplete(page);
    await compare('again.qcow2');

    // The guest stops, the job checkpoints (flushing the source), then the tab goes: the resume continues and converges.
    await startMirror(page, { source: 'guest.qcow2', target: 'second.qcow2', speed: '1M' });
    await guest.check();
    await page.waitForTimeout(1500);
    await guest.uncheck();
    await page.waitForTimeout(3000);
    await expect(jobState(page)).toContainText('— running');
    await page.reload();
    await expect(page.locator('body[data-ready="true"]')).toBeAttached();
    await expect(interrupted).toBeVisible();
    await page.getByLabel('Speed limit').fill('');
    await resume.click();
    await waitReadyAndComplete(page);
    await compare('second.qcow2');
  } finally {
    dir.remove();
  }
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
