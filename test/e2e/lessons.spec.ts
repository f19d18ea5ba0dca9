/**
 * Every lesson, end to end in Chromium by the names a person sees: open it,
 * Set up, choose the prediction the lesson calls right, Run lesson, see
 * every expected event ticked and the result. And faults armed before the
 * start: a source read fault on the demo image under stop meets the job's
 * first requests, with no speed limit.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { LESSONS } from '../../src/lessons/catalog.js';
import { test, expect } from './fixtures.js';
import { addFault, jobOutcome, jobState, makeDemo, openApp, opfsHash, shot, submitMirror, waitReadyAndComplete } from './app.js';

for (const lesson of LESSONS) {
  test(`lesson ${lesson.id}: set up, predict, run; every expected event is ticked and the result is shown`, async ({ page }, testInfo) => {
    await openApp(page);
    const region = page.getByRole('region', { name: 'Lessons' });
    await region.getByRole('link', { name: lesson.title, exact: true }).click();
    await expect(page).toHaveURL(new RegExp(`#lesson/${lesson.id}$`));
    await region.getByRole('button', { name: 'Set up' }).click();
    const answer = lesson.prediction.choices.find((c) => c.id === lesson.prediction.answer)!;
    await region.getByRole('radiogroup', { name: 'Your prediction' }).getByRole('radio', { name: answer.label, exact: true }).check();
    await region.getByRole('button', { name: 'Run lesson' }).click();
    const expected = region.getByRole('list', { name: 'Expected events' }).getByRole('listitem');
    await expect(expected).toHaveCount(lesson.expected.length);
    await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText('Your prediction was right', { timeout: 60_000 });
    for (let i = 0; i < lesson.expected.length; i++) await expect(expected.nth(i)).toHaveAccessibleName(`seen: ${lesson.expected[i]!.label}`);
    await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText(lesson.why.slice(0, 40));
    if (lesson.id === 'stop') await shot(page, testInfo, 'lesson-after');
  });
}

test('a deep link opens its lesson; a wrong prediction is told so, with the reason', async ({ page }) => {
  await openApp(page);
  await page.goto('/#lesson/report');
  const region = page.getByRole('region', { name: 'Lessons' });
  await expect(region.getByRole('heading', { name: 'report: the first error ends the job' })).toBeVisible();
  await expect(region.getByRole('button', { name: 'Run lesson' })).toBeDisabled();
  await region.getByRole('button', { name: 'Set up' }).click();
  await expect(page.getByLabel('On source error')).toHaveValue('report');
  await expect(page.getByLabel('Speed limit')).toHaveValue('4M');
  await expect(page.getByRole('list', { name: 'Fault rules' })).toContainText('source:read:EIO:5242880+4096');
  await expect(page.getByRole('list', { name: 'Fault rules' })).toContainText('armed');
  await region.getByRole('radio', { name: 'the job pauses until someone resumes it' }).check();
  await region.getByRole('button', { name: 'Run lesson' }).click();
  await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText('Not this time: the job fails', { timeout: 30_000 });
  await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText('block_job_error_action()');
});

test('a source read fault armed before Start mirror meets the demo job at full speed: the dialog, Resume, Complete; the download equals the source', async ({ page }, testInfo) => {
  await openApp(page);
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await page.reload();
  await makeDemo(page);
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '3M', length: '1', once: true });
  await expect(page.getByRole('list', { name: 'Fault rules' })).toContainText('armed: applies from the next job');
  await submitMirror(page, { source: 'demo.raw', target: 'copy.raw', onSourceError: 'stop' });
  const dialog = page.getByRole('alertdialog');
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await expect(dialog).toContainText('source read error');
  await expect(jobState(page)).toContainText('paused (io-status failed)');
  // The once-rule fired and is gone: Resume is the default.
  await expect(dialog.getByRole('button', { name: 'Resume' })).toBeFocused();
  await dialog.getByRole('button', { name: 'Resume' }).click();
  await waitReadyAndComplete(page);
  await expect(jobOutcome(page)).toContainText('Done: copy.raw');
  const download = page.waitForEvent('download');
  await page.getByRole('table').getByRole('button', { name: 'Download copy.raw' }).click();
  const path = testInfo.outputPath('copy.raw');
  await (await download).saveAs(path);
  expect(createHash('sha256').update(readFileSync(path)).digest('hex')).toBe(await opfsHash(page, 'demo.raw'));
});

test('with the stopping fault still armed, the dialog says so and Close is its default', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '2M', length: '', once: false });
  await submitMirror(page, { source: 'demo.raw', target: 'copy.raw', onTargetError: 'stop' });
  const dialog = page.getByRole('alertdialog');
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await expect(dialog).toContainText('is still armed: remove it under Faults first, or Resume meets it again.');
  await expect(dialog.getByRole('button', { name: 'Close' })).toBeFocused();
  await dialog.getByRole('button', { name: 'Close' }).click();
  await page.getByRole('button', { name: /^Remove fault / }).click();
  await page.getByRole('button', { name: 'Resume', exact: true }).click();
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'copy.raw')).toBe(await opfsHash(page, 'demo.raw'));
  // Between runs the panel names no finished job: a new rule is armed.
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '1M', length: '1', once: true });
  await expect(page.locator('#fault-error')).toHaveText('');
  await expect(page.getByRole('list', { name: 'Fault rules' })).toContainText('armed');
});
