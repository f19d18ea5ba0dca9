/** The error policies, through the UI, as a teacher would show them. */
import { test, expect } from './fixtures.js';
import { addFault, jobOutcome, jobState, loggedEvents, makeDemo, openApp, opfsHash, shot, startMirror, waitReadyAndComplete } from './app.js';

test.beforeEach(async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
});

test('stop on a source read error: the dialog names it; Resume completes; images equal', async ({ page }, testInfo) => {
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '2M', onSourceError: 'stop' });
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '6M', length: '1', once: true });
  const dialog = page.getByRole('alertdialog');
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await expect(dialog).toContainText('source read error');
  await expect(dialog).toContainText('EIO');
  await expect(dialog).toContainText('bytes 6291456–7340031');
  await expect(jobState(page)).toContainText('paused (io-status failed)');
  await shot(page, testInfo, 'stopped-dialog');
  await page.getByLabel('Speed limit').fill('');
  await page.getByLabel('Speed limit').dispatchEvent('change');
  await dialog.getByRole('button', { name: 'Resume' }).click();
  await expect(dialog).toBeHidden();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'copy.raw')).toBe(await opfsHash(page, 'demo.raw'));
  const names = (await loggedEvents(page)).map((e) => (e.event === 'JOB_STATUS_CHANGE' ? e.data.status : e.event));
  expect(names).toEqual(['created', 'running', 'BLOCK_JOB_ERROR', 'paused', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
});

test('report: the job ends with the error shown', async ({ page }, testInfo) => {
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '1M', onSourceError: 'report' });
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '5M', length: '', once: false });
  await expect(jobState(page)).toContainText('— source read error (EIO)', { timeout: 20_000 });
  await expect(jobOutcome(page)).toHaveText('Failed at 5.00 MiB: source read error (EIO); copy.raw is incomplete.DeleteRetry', { timeout: 20_000 });
  await expect(page.locator('#progress')).toHaveClass(/failed/);
  await expect(page.getByRole('progressbar', { name: 'Mirror progress' })).toHaveAttribute('aria-valuetext', /^62% \(5\.00 MiB of 8\.00 MiB\): failed$/);
  await shot(page, testInfo, 'report-failed');
  const completed = (await loggedEvents(page)).find((e) => e.event === 'BLOCK_JOB_COMPLETED');
  expect(completed?.data.error).toBe('Input/output error');
});

test('ignore with a once-fault: the error is logged, the job retries and completes; images equal', async ({ page }) => {
  // 1 MiB/s: the fault at 6 MiB is added seconds before the job gets there, also on a loaded machine.
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '1M', onSourceError: 'ignore' });
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '6M', length: '64K', once: true });
  await waitReadyAndComplete(page);
  const errors = (await loggedEvents(page)).filter((e) => e.event === 'BLOCK_JOB_ERROR');
  expect(errors.map((e) => e.data.action)).toEqual(['ignore']);
  expect(await opfsHash(page, 'copy.raw')).toBe(await opfsHash(page, 'demo.raw'));
});

test('enospc on a full target pauses (nospace); remove the fault, Resume, it completes', async ({ page }, testInfo) => {
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '1M', onTargetError: 'enospc' });
  await addFault(page, { side: 'target', op: 'write', errno: 'ENOSPC', offset: '4M', length: '', once: false });
  const dialog = page.getByRole('alertdialog');
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await expect(dialog).toContainText('ENOSPC');
  await expect(jobState(page)).toContainText('io-status nospace');
  await shot(page, testInfo, 'enospc-paused');
  await dialog.getByRole('button', { name: 'Close' }).click();
  await page.getByRole('button', { name: /^Remove fault target:write:ENOSPC/ }).click();
  await expect(page.getByRole('list', { name: 'Fault rules' }).getByRole('listitem')).toHaveCount(0);
  await page.getByRole('button', { name: 'Resume', exact: true }).click();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'copy.raw')).toBe(await opfsHash(page, 'demo.raw'));
});
