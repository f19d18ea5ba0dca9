/**
 * The page as it looks: at 1366x768, on a phone (390x844) and in dark mode,
 * the demo image is mirrored to copy.qcow2 (held at a speed limit so the
 * job is caught running), then completed; screenshots of the job running,
 * the job done and the images list go to test-results/screens/ to be looked
 * at. What could break in the layout is asserted: no sideways scroll, the
 * Copied figure on one line, buttons in a row that do not touch or overlap,
 * and axe-core finding nothing serious or critical in each state.
 */
import { AxeBuilder } from '@axe-core/playwright';
import type { Locator, Page } from '@playwright/test';
import { test, expect } from './fixtures.js';
import { jobOutcome, jobState, makeDemo, openApp, startMirror } from './app.js';

const SCREENS = 'test-results/screens';

const LOOKS = [
  { name: 'desktop', width: 1366, height: 768, colorScheme: 'light' },
  { name: 'phone', width: 390, height: 844, colorScheme: 'light' },
  { name: 'dark', width: 1366, height: 768, colorScheme: 'dark' },
] as const;

async function seriousViolations(page: Page, state: string): Promise<string[]> {
  const result = await new AxeBuilder({ page }).analyze();
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${state}: ${v.id} (${v.impact}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

async function noSidewaysScroll(page: Page): Promise<void> {
  const [scrollWidth, innerWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  expect(scrollWidth, `the page is ${scrollWidth} px wide in a ${innerWidth} px window`).toBeLessThanOrEqual(innerWidth);
}

/** A figure of the job's stats: its value. */
const figure = (page: Page, label: string) => page.locator('#job-stats dt', { hasText: new RegExp(`^${label}$`) }).locator('xpath=following-sibling::dd[1]');

/** "265 KiB/s (198 KiB/s data, 66.1 KiB/s zeroes)" or "250 KiB/s": the data copied per second, in KiB. */
function dataKiBps(text: string | null): number {
  const m = /([\d.]+) (bytes|KiB|MiB)\/s data/.exec(text ?? '') ?? /^([\d.]+) (bytes|KiB|MiB)\/s/.exec(text ?? '');
  if (!m) throw new Error(`no rate in "${text}"`);
  return Number(m[1]) * { bytes: 1 / 1024, KiB: 1, MiB: 1024 }[m[2] as 'bytes' | 'KiB' | 'MiB'];
}

/** A figure of the job's stats (its dd) stands on one line: its box is one line high. */
async function onOneLine(page: Page, label: string): Promise<void> {
  const dd = figure(page, label);
  const [height, line] = await dd.evaluate((el) => {
    const style = getComputedStyle(el);
    return [el.getBoundingClientRect().height, parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.45];
  });
  expect(height, `${label} "${await dd.textContent()}" is ${height} px high, a line is ${line} px`).toBeLessThan(line * 1.5);
}

/** The visible buttons of a row keep apart: no two boxes overlap, and each has at least 4 px of room to the next. */
async function buttonsApart(buttons: Locator, what: string): Promise<void> {
  const boxes = (await buttons.evaluateAll((els) => els.filter((e) => (e as HTMLElement).offsetParent !== null).map((e) => {
    const r = e.getBoundingClientRect();
    return { name: e.textContent ?? '', x: r.x, y: r.y, w: r.width, h: r.height };
  })));
  expect(boxes.length, `${what}: buttons`).toBeGreaterThan(1);
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i]!;
      const b = boxes[j]!;
      const apart = a.x + a.w + 4 <= b.x || b.x + b.w + 4 <= a.x || a.y + a.h + 4 <= b.y || b.y + b.h + 4 <= a.y;
      expect(apart, `${what}: ${a.name} ${JSON.stringify(a)} and ${b.name} ${JSON.stringify(b)} touch`).toBe(true);
    }
  }
}

/** The buttons of a row stand on one baseline: their labels' vertical centres agree within a pixel. */
async function labelsLevel(buttons: Locator, what: string): Promise<void> {
  const centres = await buttons.evaluateAll((els) => els.map((e) => {
    const r = e.getBoundingClientRect();
    return r.y + r.height / 2;
  }));
  for (const c of centres) expect(Math.abs(c - centres[0]!), `${what}: button centres ${centres.join(', ')}`).toBeLessThanOrEqual(1);
}

for (const look of LOOKS) {
  test(`screens, ${look.name} (${look.width}x${look.height}, ${look.colorScheme}): the job running, done, and the images list`, async ({ page }) => {
    await page.setViewportSize({ width: look.width, height: look.height });
    await page.emulateMedia({ colorScheme: look.colorScheme });
    await openApp(page);
    const found = await seriousViolations(page, 'first load');
    await makeDemo(page);
    await noSidewaysScroll(page);
    // The images toolbar: New demo image, Import file and Import from URL on one line where there is room.
    if (look.width > 1000) await labelsLevel(page.locator('#images-section .toolbar > button, #import-url'), 'the images toolbar');

    await startMirror(page, { source: 'demo.raw', target: 'copy.qcow2', speed: '256K' });
    await expect(jobState(page)).toContainText('Copying');
    // Held at 256 KiB/s, the data copied reads about that once a few seconds are seen (zeroes cost nothing and come on top).
    const throughput = figure(page, 'Throughput');
    await expect(throughput).toHaveText(/KiB\/s/, { timeout: 20_000 });
    expect(dataKiBps(await throughput.textContent())).toBeGreaterThan(128);
    expect(dataKiBps(await throughput.textContent())).toBeLessThan(400);
    await expect.poll(() => page.locator('#timeline').getAttribute('data-peak')).not.toBe('0');
    await noSidewaysScroll(page);
    await onOneLine(page, 'Copied');
    await buttonsApart(page.locator('#job-section .toolbar button'), 'the job’s verbs');
    await page.locator('#job-section').screenshot({ path: `${SCREENS}/${look.name}-job-running.png` });
    found.push(...(await seriousViolations(page, 'job running')));

    await page.getByLabel('Speed limit').fill('');
    await page.getByLabel('Speed limit').dispatchEvent('change');
    await expect(jobState(page)).toContainText('— ready', { timeout: 60_000 });
    await page.getByRole('button', { name: 'Complete', exact: true }).click();
    await expect(jobOutcome(page)).toContainText('Done: copy.qcow2 (qcow2', { timeout: 60_000 });
    // Complete by mouse, as by keyboard (everyday.spec.ts), leaves focus on the ending's Download.
    await expect(jobOutcome(page).getByRole('button', { name: 'Download copy.qcow2' })).toBeFocused();
    await noSidewaysScroll(page);
    await onOneLine(page, 'Copied');
    found.push(...(await seriousViolations(page, 'job done')));
    await page.locator('#job-section').screenshot({ path: `${SCREENS}/${look.name}-job-done.png` });

    const images = page.getByRole('region', { name: 'Images' });
    await images.scrollIntoViewIfNeeded();
    for (const name of ['demo.raw', 'copy.qcow2']) {
      const row = images.getByRole('row', { name: new RegExp(`^${name.replace('.', '\\.')}`) });
      await buttonsApart(row.getByRole('button'), `${name}'s actions`);
      await labelsLevel(row.getByRole('button'), `${name}'s actions`);
    }
    await noSidewaysScroll(page);
    found.push(...(await seriousViolations(page, 'images list')));
    await images.screenshot({ path: `${SCREENS}/${look.name}-images.png` });
    await page.screenshot({ path: `${SCREENS}/${look.name}-page.png`, fullPage: true });
    expect(found).toEqual([]);
  });
}
