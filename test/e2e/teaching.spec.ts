/**
 * What the page says while a job meets errors: the event log in words
 * (folded repeats, the JSON a click away, filters), the panel's note when
 * an ignored error keeps the job from converging, why len passes the disk
 * size under a guest, and the timeline with its words.
 */
import { AxeBuilder } from '@axe-core/playwright';
import { test, expect } from './fixtures.js';
import { addFault, jobState, makeDemo, openApp, runStopLesson, shot, startMirror, waitReadyAndComplete } from './app.js';

test('a persistent error under ignore: the log folds it in words, the panel says the job cannot converge, the timeline marks it', async ({ page }, testInfo) => {
  await openApp(page);
  await makeDemo(page);
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '5M', length: '4K', once: false });
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '4M', onSourceError: 'ignore' });
  const note = page.locator('#job-note');
  await expect(note).toContainText('This job cannot converge while the error lasts', { timeout: 30_000 });
  await expect(page.locator('#job-stats')).toContainText('ETAnone while the error lasts');
  const log = page.getByRole('log', { name: 'Events' });
  const errorLine = log.getByRole('listitem').filter({ hasText: /read error at 5\.00 MiB \(.+\): EIO; on-source-error=ignore, so the range stays dirty and is retried/ });
  await expect(errorLine).toHaveCount(1);
  await expect(errorLine).toContainText(/ ×\d+/);
  await expect(errorLine).toContainText(/^\+\d+\.\d{3} s mirror0 /);
  // Its JSON is one click away.
  await errorLine.locator('summary').click();
  await expect(errorLine.locator('code')).toContainText('"event":"BLOCK_JOB_ERROR"');
  // Filters by kind.
  await page.getByLabel('Show kind').selectOption('error');
  await expect(log.getByRole('listitem').filter({ hasText: 'running' })).toBeHidden();
  await expect(errorLine).toBeVisible();
  await page.getByLabel('Show kind').selectOption('');
  await expect(page.locator('#timeline-words')).toContainText(/Marks: .*read error at 5\.00 MiB \(ignore\) ×\d+/);
  await shot(page, testInfo, 'timeline-ignore');
  // Lifted, the job converges.
  await page.getByRole('button', { name: /^Remove fault / }).click();
  await waitReadyAndComplete(page);
  await expect(note).toHaveText('');
  await expect(page.locator('#timeline-words')).toContainText(/READY.*completed/);
  await shot(page, testInfo, 'timeline-done');
});

test('a guest writing during the copy: len passes the disk size and the panel says why', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await page.getByLabel('Guest write rate').fill('8M');
  await page.getByRole('switch', { name: 'Guest writes' }).check();
  await expect(page.locator('#guest-stats')).toHaveText('armed: the guest starts writing when the job starts');
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '4M' });
  await expect(page.locator('#job-note')).toContainText("is past the disk's size (8.00 MiB): every write to a chunk already copied adds its bytes to the work again", { timeout: 30_000 });
  await page.getByRole('switch', { name: 'Guest writes' }).uncheck();
  await waitReadyAndComplete(page);
  await expect(jobState(page)).toContainText('Done');
});

test('an open lesson and its result pass axe-core (light and dark)', async ({ page }) => {
  const region = await runStopLesson(page);
  const axe = async (moment: string) => {
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      const result = await new AxeBuilder({ page }).analyze();
      const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${moment}, ${scheme}: ${v.id} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
      expect(serious).toEqual([]);
    }
  };
  // The second question, asked while the job is paused; then the dialog; then the result with its timeline.
  const ask = region.getByRole('group', { name: 'Before you press Resume: what will the job do?' });
  await expect(ask).toBeVisible({ timeout: 30_000 });
  await axe('asking');
  await ask.getByRole('radio', { name: 'it tries the failed range again, which now succeeds, and goes on' }).check();
  await ask.getByRole('button', { name: 'Go on' }).click();
  await page.getByRole('alertdialog').getByRole('button', { name: 'Resume' }).click();
  await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText('Your prediction was right', { timeout: 30_000 });
  await axe('the result');
});
