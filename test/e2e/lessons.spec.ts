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
import { addFault, jobOutcome, jobState, makeDemo, openApp, opfsHash, runStopLesson, shot, submitMirror, waitReadyAndComplete } from './app.js';

/** A lesson that hands a paused job to the learner: the state it stays in, as the Job panel shows it. */
function handsOver(lesson: (typeof LESSONS)[number]): string | null {
  const i = lesson.expected.findIndex((x) => x.then?.some((a) => a.do === 'await-learner'));
  if (i < 0) return null;
  const x = lesson.expected[i]!;
  return x.status === 'standby' ? 'standby' : `paused (io-status ${lesson.checks.some((c) => c.claim.includes('nospace')) ? 'nospace' : 'failed'})`;
}

for (const lesson of LESSONS) {
  test(`lesson ${lesson.id}: no expected event before Run; the run shows what the lesson claims, with its figures; the answer is graded right`, async ({ page }, testInfo) => {
    await openApp(page);
    const region = page.getByRole('region', { name: 'Lessons' });
    await region.getByRole('link', { name: lesson.title, exact: true }).click();
    await expect(page).toHaveURL(new RegExp(`#lesson/${lesson.id}$`));
    await region.getByRole('button', { name: 'Set up' }).click();
    const expected = region.getByRole('list', { name: 'Expected events' });
    await expect(expected.getByRole('listitem')).toHaveCount(lesson.expected.length);
    // The answer is not on screen before the question: no expected event can be read before Run.
    const before = await expected.innerText();
    for (const x of lesson.expected) expect(before).not.toContain(x.label);
    expect(before).not.toContain('BLOCK_JOB');
    if (lesson.id === 'stop') await shot(page, testInfo, 'lesson-before');
    const answer = lesson.prediction.choices.find((c) => c.id === lesson.prediction.answer)!;
    await region.getByRole('radiogroup', { name: 'Your prediction' }).getByRole('radio', { name: answer.label, exact: true }).check();
    await region.getByRole('button', { name: 'Run lesson' }).click();
    // A second moment: the lesson asks again before its next step, and waits for the answer.
    for (const q of lesson.expected.flatMap((x) => x.then ?? []).flatMap((a) => (a.do === 'ask' ? [a.question] : []))) {
      const group = region.getByRole('group', { name: q.question });
      await expect(group).toBeVisible({ timeout: 30_000 });
      const right = q.choices.find((c) => c.id === q.answer)!;
      await group.getByRole('radiogroup', { name: 'Your next prediction' }).getByRole('radio', { name: right.label, exact: true }).check();
      await group.getByRole('button', { name: 'Go on' }).click();
      await expect(group).toBeHidden();
    }
    const paused = handsOver(lesson);
    if (paused) {
      // The lesson hands the paused job over and waits: it stays paused until the learner presses Resume.
      await expect(region.getByRole('status', { name: 'Your turn' })).toBeVisible({ timeout: 30_000 });
      await expect(jobState(page)).toContainText(paused);
      await page.waitForTimeout(2000);
      await expect(jobState(page)).toContainText(paused);
      if (lesson.id === 'stop') await shot(page, testInfo, 'lesson-paused');
      // The dialog explains the stop once the lesson hands the job over, and says nothing stale: the lesson lifted the fault.
      const dialog = page.getByRole('alertdialog');
      await expect(dialog).toBeVisible();
      await expect(dialog).not.toContainText('still armed');
      await expect(dialog.getByRole('button', { name: 'Resume' })).toBeFocused();
      await dialog.getByRole('button', { name: 'Resume' }).click();
      await expect(jobState(page)).not.toContainText(paused);
      await expect(dialog).toBeHidden();
      await expect(region.getByRole('status', { name: 'Your turn' })).toBeHidden();
    }
    const result = region.getByRole('status', { name: 'Lesson result' });
    await expect(result).toContainText('Your prediction was right', { timeout: 60_000 });
    for (let i = 0; i < lesson.expected.length; i++) await expect(expected.getByRole('listitem').nth(i)).toHaveAccessibleName(`seen: ${lesson.expected[i]!.label}`);
    // The result names what this run showed, one line per claim, each held.
    const figures = result.getByRole('list', { name: 'What the run showed' }).getByRole('listitem');
    await expect(figures).toHaveCount(lesson.checks.length);
    for (const text of await figures.allInnerTexts()) expect(text).toMatch(/^✓ /);
    if (lesson.id === 'resume') await expect(result).toContainText(/the resumed job copied [\d.]+ MiB of 8\.00 MiB: the [\d.]+ MiB already clean were not read again/);
    await expect(result).toContainText(lesson.why.slice(0, 40));
    // The job's end is logged once, in words (a resumed job is the same job, not a second ending).
    await expect(page.locator('#events-log')).toContainText('gone (null)');
    expect((await page.locator('#events-log').innerText()).match(/gone \(null\)/g)).toHaveLength(1);
    if (lesson.id === 'stop') await shot(page, testInfo, 'lesson-after');
  });
}

test('an unknown lesson in the address says so and lists the lessons', async ({ page }) => {
  await openApp(page);
  await page.goto('/#lesson/nope');
  await expect(page.getByRole('region', { name: 'Lessons' }).getByRole('alert')).toContainText(`There is no lesson "nope". The lessons are: ${LESSONS.map((l) => l.id).join(', ')}.`);
});

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
  await expect(region.getByRole('status', { name: 'Lesson result' })).toContainText('You predicted “the job pauses until someone resumes it”: pausing is what stop does');
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

test('a run kept as a timeline: moved back it shows the job as it was; its link shows the same timeline without running', async ({ page, context }, testInfo) => {
  const region = await runStopLesson(page);
  const ask = region.getByRole('group', { name: 'Before you press Resume: what will the job do?' });
  await ask.getByRole('radio', { name: 'it tries the failed range again, which now succeeds, and goes on' }).check({ timeout: 30_000 });
  await ask.getByRole('button', { name: 'Go on' }).click();
  await expect(region.getByRole('status', { name: 'Your turn' })).toBeVisible({ timeout: 30_000 });
  await page.getByRole('alertdialog').getByRole('button', { name: 'Resume' }).click();
  const result = region.getByRole('status', { name: 'Lesson result' });
  await expect(result).toContainText('Your prediction was right', { timeout: 60_000 });
  const slider = region.getByRole('slider', { name: 'Timeline position' });
  const last = Number(await slider.getAttribute('max'));
  expect(last).toBeGreaterThan(5);
  const at = region.getByRole('status', { name: 'At that moment' });
  const events = region.getByRole('list', { name: 'Events up to then' }).getByRole('listitem');
  await expect(at).toContainText(': null; 8.00 MiB of 8.00 MiB copied');
  // Back to the pause: the state, its io-status, and no line after it.
  let paused = -1;
  for (let i = 0; i <= last && paused < 0; i++) {
    await slider.fill(String(i));
    if ((await at.innerText()).includes('paused, io-status failed')) paused = i;
  }
  expect(paused).toBeGreaterThan(0);
  const pausedEvents = await events.allInnerTexts();
  expect(pausedEvents.join('\n')).toContain('read error at 5.00 MiB');
  expect(pausedEvents.join('\n')).not.toContain('completed');
  const pausedWords = await at.innerText();
  const picture = await region.getByRole('img', { name: 'The bitmap at that moment' }).getAttribute('data-cells');
  expect(picture).toMatch(/f|d/);
  await shot(page, testInfo, 'lesson-timeline-back');
  await region.getByRole('button', { name: 'Copy link to this run' }).click();
  const link = await region.getByRole('textbox', { name: 'Link to this run' }).inputValue();
  expect(link).toMatch(/#run\/[A-Za-z0-9_-]+$/);
  // Opened elsewhere: the same timeline, the same moment, the same result, and no job.
  const other = await context.newPage();
  await other.goto(link);
  const there = other.getByRole('region', { name: 'Lessons' });
  await expect(there.getByRole('heading', { name: 'stop: the job pauses, Resume retries the range' })).toBeVisible();
  await expect(there.getByRole('status', { name: 'Lesson result' })).toContainText('Your prediction was right');
  await expect(there.getByRole('radio', { name: 'the job pauses until someone resumes it' })).toBeChecked();
  const thereSlider = there.getByRole('slider', { name: 'Timeline position' });
  expect(Number(await thereSlider.getAttribute('max'))).toBe(last);
  await thereSlider.fill(String(paused));
  await expect(there.getByRole('status', { name: 'At that moment' })).toHaveText(pausedWords);
  expect(await there.getByRole('list', { name: 'Events up to then' }).getByRole('listitem').allInnerTexts()).toEqual(pausedEvents);
  expect(await there.getByRole('img', { name: 'The bitmap at that moment' }).getAttribute('data-cells')).toBe(picture);
  for (let i = 0; i < 12; i++) await expect(there.getByRole('list', { name: 'Expected events' }).getByRole('listitem').nth(i)).toHaveAccessibleName(/^seen: /);
  await expect(other.getByRole('status', { name: 'Job state' })).not.toContainText('mirror');
  // A damaged link says so.
  await other.goto(link.replace(/#run\/.*/, '#run/AAAA'));
  await expect(there.locator('#lessons-error')).toContainText("this link does not hold a lesson's run: it does not unpack");
});
