/**
 * The app in everyday use: messages in words that look like errors and go
 * with the next action, a phone's width without sideways scrolling, focus
 * that lands where a keyboard user expects after each action, and axe-core
 * finding nothing serious or critical in the page's main states, light and
 * dark.
 */
import { AxeBuilder } from '@axe-core/playwright';
import type { Page } from '@playwright/test';
import { test, expect } from './fixtures.js';
import { addFault, formError, imagesMessage, jobOutcome, jobState, makeDemo, openApp, shot, startMirror, submitMirror } from './app.js';

const button = (page: Page, name: string) => page.getByRole('button', { name, exact: true });
const focused = (page: Page) => page.evaluate(() => {
  const el = document.activeElement;
  return el ? `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.textContent && el.tagName === 'BUTTON' ? `:${el.textContent}` : ''}` : 'none';
});

/** axe-core's violations of impact serious or critical, in both colour schemes. */
async function seriousViolations(page: Page, state: string): Promise<string[]> {
  const found: string[] = [];
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    const result = await new AxeBuilder({ page }).analyze();
    for (const v of result.violations) {
      if (v.impact === 'serious' || v.impact === 'critical') found.push(`${state}, ${scheme}: ${v.id} (${v.impact}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  return found;
}

async function noSidewaysScroll(page: Page): Promise<void> {
  const [scrollWidth, innerWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  expect(scrollWidth, `the page is ${scrollWidth} px wide in a ${innerWidth} px window`).toBeLessThanOrEqual(innerWidth);
}

test('messages in words: a taken name, a zero size and a busy target each say what is wrong; errors look like errors and clear on the next action', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await page.getByLabel('Image name').fill('demo.raw');
  await page.getByLabel('Image size').fill('1M');
  await button(page, 'Create image').click();
  await expect(imagesMessage(page)).toHaveText('An image named demo.raw already exists: choose another name, or delete it first.');
  await expect(imagesMessage(page)).toHaveClass(/error/);
  await expect(imagesMessage(page)).toHaveCSS('color', await page.locator('#form-error').evaluate((e) => getComputedStyle(e).color));

  await page.getByLabel('Image name').fill('empty.raw');
  await page.getByLabel('Image size').fill('0');
  await button(page, 'Create image').click();
  await expect(imagesMessage(page)).toHaveText('Image size must be more than 0 (for example 64M).');
  await expect(page.getByRole('rowheader', { name: 'empty.raw' })).toHaveCount(0);

  await startMirror(page, { source: 'demo.raw', target: 'copy.qcow2', targetFormat: 'qcow2', speed: '256K' });
  // The images error went with the next action.
  await expect(imagesMessage(page)).toHaveText('');
  await expect(imagesMessage(page)).not.toHaveClass(/error/);
  // The list says who holds what, with the target's real format.
  const row = (name: string) => page.getByRole('row', { name: new RegExp(`^${name.replace('.', '\\.')}`) });
  await expect(row('copy.qcow2').getByRole('cell').nth(0)).toHaveText('qcow2');
  await expect(row('copy.qcow2').getByRole('cell').nth(4)).toHaveText('target of mirror0');
  await expect(row('demo.raw').getByRole('cell').nth(4)).toHaveText('source of mirror0');

  await submitMirror(page, { source: 'demo.raw', target: 'copy.qcow2' });
  await expect(formError(page)).toHaveText('copy.qcow2 is in use by mirror0 (its target): wait until it ends, or choose another image.');
  // A busy image is refused before any confirmation is asked.
  let dialogs = 0;
  page.on('dialog', () => dialogs++);
  await page.getByRole('table').getByRole('button', { name: 'Delete demo.raw' }).click();
  await expect(imagesMessage(page)).toHaveText('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');
  expect(dialogs).toBe(0);
  // That action cleared the form's error.
  await expect(formError(page)).toHaveText('');
});

test('the job panel: one heading, words with QMP status as small text, picker names the jobs, Cancel while paused, the ending with its action', async ({ page }) => {
  await openApp(page);
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'one.raw', speed: '256K' });
  await expect(page.getByRole('heading', { name: 'Job mirror0: demo.raw → one.raw' })).toBeVisible();
  await expect(jobState(page)).toHaveText('Copying — running (io-status ok)');
  await expect(page.locator('#job-stats')).toContainText('Speed limit256 KiB/s');
  await button(page, 'Pause').click();
  await expect(jobState(page)).toHaveText('Paused — paused (io-status ok)');
  await expect(button(page, 'Cancel')).toBeEnabled();
  await startMirror(page, { source: 'demo.raw', target: 'two.raw' });
  await expect(page.getByRole('combobox', { name: 'Job', exact: true }).getByRole('option')).toHaveText(['mirror0: demo.raw → one.raw', 'mirror1: demo.raw → two.raw']);
  await expect(jobState(page)).toContainText('In sync: Complete to finish — ready');
  await button(page, 'Complete').click();
  await expect(jobOutcome(page)).toHaveText('Done: two.raw (raw, 8.00 MiB).Download');
  await expect(jobState(page)).toHaveText('Done — completed, the target equals the source');
  // The bitmap picture of the ended job stays.
  expect(await page.locator('#bitmap').getAttribute('data-cells')).toMatch(/^[cz]+$/);
  await page.getByRole('combobox', { name: 'Job', exact: true }).selectOption('mirror0');
  await button(page, 'Cancel').click();
  await expect(jobOutcome(page)).toHaveText(/^Cancelled; one\.raw holds what was copied\.Delete$/);
  await expect(page.locator('#progress')).toHaveClass(/cancelled/);
});

test('focus: Start → the job panel; Pause → Resume → Pause; Resume at READY → Complete; Complete → the ending; Remove fault → the next; New demo image keeps it; a skip link', async ({ page }) => {
  await openApp(page);
  await page.keyboard.press('Tab');
  expect(await focused(page)).toBe('a');
  await expect(page.getByRole('link', { name: 'Skip to the job' })).toBeVisible();

  await button(page, 'New demo image').focus();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('rowheader', { name: 'demo.raw', exact: true })).toBeVisible();
  await expect.poll(() => focused(page)).toBe('button#new-demo:New demo image');

  await submitMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '128K', onTargetError: 'stop' });
  await expect.poll(() => focused(page)).toBe('section#job-section');

  await button(page, 'Pause').focus();
  await page.keyboard.press('Enter');
  await expect.poll(() => focused(page)).toBe('button:Resume');
  await page.keyboard.press('Enter');
  await expect.poll(() => focused(page)).toBe('button:Pause');

  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '7M', length: '1', once: false });
  await addFault(page, { side: 'source', op: 'read', errno: 'EIO', offset: '7M', length: '1', once: false });
  const rules = page.getByRole('list', { name: 'Fault rules' });
  await rules.getByRole('button').first().focus();
  await page.keyboard.press('Enter');
  await expect(rules.getByRole('listitem')).toHaveCount(1);
  await expect.poll(() => focused(page)).toBe('button:Remove');
  await page.keyboard.press('Enter');
  await expect(rules.getByRole('listitem')).toHaveCount(0);
  await expect.poll(() => focused(page)).toBe('button:Add fault');

  // Let it reach READY, then pause it there: Resume brings it back to READY, and Complete is next.
  await page.getByLabel('Speed limit').fill('');
  await page.getByLabel('Speed limit').dispatchEvent('change');
  await expect(jobState(page)).toContainText('— ready', { timeout: 30_000 });
  await button(page, 'Pause').click();
  await expect(jobState(page)).toContainText('— standby');
  await button(page, 'Resume').focus();
  await page.keyboard.press('Enter');
  await expect.poll(() => focused(page)).toBe('button:Complete');
  await page.keyboard.press('Enter');
  await expect(jobOutcome(page)).toContainText('Done: copy.raw');
  await expect.poll(() => focused(page)).toBe('button:Download');

  // The skip link takes the keyboard to the job.
  await page.getByRole('link', { name: 'Skip to the job' }).focus();
  await page.keyboard.press('Enter');
  await expect.poll(() => focused(page)).toBe('section#job-section');
});

test('a phone (390 px): nothing scrolls the page sideways; the images are cards with their actions on screen', async ({ page }, testInfo) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await openApp(page);
  await noSidewaysScroll(page);
  await makeDemo(page);
  await page.getByLabel('Image name').fill('a-rather-long-image-name-for-a-phone-screen.qcow2');
  await page.getByLabel('Image size').fill('64M');
  await button(page, 'Create image').click();
  await expect(page.getByRole('rowheader', { name: 'a-rather-long-image-name-for-a-phone-screen.qcow2' })).toBeVisible();
  await noSidewaysScroll(page);
  const del = button(page, 'Delete a-rather-long-image-name-for-a-phone-screen.qcow2');
  await del.scrollIntoViewIfNeeded();
  const box = (await del.boundingBox())!;
  expect(box.x + box.width).toBeLessThanOrEqual(390);
  await shot(page, testInfo, 'phone-images');

  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '256K', onTargetError: 'stop' });
  await noSidewaysScroll(page);
  await shot(page, testInfo, 'phone-running');
  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '0', length: '', once: false });
  await expect(page.getByRole('alertdialog')).toBeVisible({ timeout: 20_000 });
  await noSidewaysScroll(page);
  await shot(page, testInfo, 'phone-dialog');
  await page.getByRole('alertdialog').getByRole('button', { name: 'Cancel' }).click();
  await expect(jobOutcome(page)).toContainText('Cancelled');
  await noSidewaysScroll(page);
  await shot(page, testInfo, 'phone-ended');
});

test('axe-core: nothing serious or critical at first load, with a job running, with the stop dialog open, once it ended (light and dark)', async ({ page }) => {
  await openApp(page);
  const found = await seriousViolations(page, 'first load');
  await makeDemo(page);
  await startMirror(page, { source: 'demo.raw', target: 'copy.raw', speed: '256K', onTargetError: 'stop' });
  found.push(...(await seriousViolations(page, 'job running')));
  await addFault(page, { side: 'target', op: 'write', errno: 'EIO', offset: '0', length: '', once: false });
  await expect(page.getByRole('alertdialog')).toBeVisible({ timeout: 20_000 });
  found.push(...(await seriousViolations(page, 'dialog open')));
  await page.getByRole('alertdialog').getByRole('button', { name: 'Cancel' }).click();
  await expect(jobOutcome(page)).toContainText('Cancelled');
  found.push(...(await seriousViolations(page, 'job ended')));
  expect(found).toEqual([]);
});

test('the README’s first copy: New demo image, Target copy.qcow2, Start mirror, Complete makes a qcow2; an empty target says what to type; Mirror... fills the form', async ({ page }) => {
  await openApp(page);
  await button(page, 'New demo image').click();
  await expect(page.getByRole('table')).toContainText('demo.raw');
  // Nothing typed yet: the form says what a name makes, and Start mirror says what to type (not the browser's "fill out this field").
  await expect(page.getByRole('status', { name: 'What Start mirror makes' })).toHaveText('Type a name for the target: copy.qcow2 makes a qcow2 image, copy.raw a raw one.');
  await button(page, 'Start mirror').click();
  await expect(formError(page)).toContainText('Type a name for the target image');
  await expect(page.getByLabel('Target', { exact: true })).toBeFocused();
  // Mirror... on an image makes it the source and takes the focus to the target.
  await page.getByRole('button', { name: 'Mirror demo.raw...' }).click();
  await expect(page.getByLabel('Target', { exact: true })).toBeFocused();
  await page.getByLabel('Target', { exact: true }).fill('copy.qcow2');
  await expect(page.getByRole('status', { name: 'What Start mirror makes' })).toHaveText('Start mirror makes a new qcow2 image, copy.qcow2 (from its name).');
  await button(page, 'Start mirror').click();
  await expect(jobState(page)).toContainText('— ready', { timeout: 60_000 });
  await button(page, 'Complete').click();
  await expect(jobOutcome(page)).toContainText('Done: copy.qcow2 (qcow2', { timeout: 60_000 });
  await expect(page.getByRole('table').getByRole('row', { name: /copy\.qcow2/ })).toContainText('qcow2');
  // A name with no format in it takes the source's.
  await page.getByLabel('Target', { exact: true }).fill('copy2');
  await expect(page.getByRole('status', { name: 'What Start mirror makes' })).toHaveText('Start mirror makes a new raw image, copy2 (the source’s format).');
});
