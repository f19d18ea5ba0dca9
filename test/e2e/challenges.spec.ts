/**
 * The two challenges in Chromium, played as a person would: Set up, change
 * the Mirror form, Start mirror, drive the job from the Job panel; the
 * result is judged on the job's own events, with the commands counted.
 */
import { test, expect } from './fixtures.js';
import { jobState, openApp, waitReadyAndComplete } from './app.js';

async function setUp(page: import('@playwright/test').Page, title: string): Promise<void> {
  const region = page.getByRole('region', { name: 'Challenges' });
  await region.getByRole('button', { name: title }).click();
  await region.getByRole('button', { name: 'Set up challenge' }).click();
  await expect(region.getByRole('status', { name: 'Challenge state' })).toContainText('press Start mirror');
}

test('through two failures: ignore retries by itself and Complete is the one command; report fails at the first', async ({ page }) => {
  await openApp(page);
  const region = page.getByRole('region', { name: 'Challenges' });
  await setUp(page, 'Through two failures to the end');
  await expect(page.getByRole('list', { name: 'Fault rules' })).toContainText('target:write:EIO:2097152+4096:once');
  await page.getByLabel('On target error').selectOption('ignore');
  await page.getByRole('button', { name: 'Start mirror' }).click();
  await expect(region.getByRole('status', { name: 'Challenge state' })).toContainText('0 of at most 3 commands used');
  await waitReadyAndComplete(page);
  await expect(region.getByRole('status', { name: 'Challenge result' })).toHaveText('Goal met: completed through 2 failures with 1 command(s).', { timeout: 30_000 });

  await setUp(page, 'Through two failures to the end');
  await page.getByLabel('On target error').selectOption('report');
  await page.getByRole('button', { name: 'Start mirror' }).click();
  await expect(region.getByRole('status', { name: 'Challenge result' })).toHaveText('Not met: the target failed 1 time(s), not twice: keep the faults armed. Set up to try again.', { timeout: 30_000 });
});

test('keep up with a busy guest: write-blocking reaches READY with the guest writing', async ({ page }) => {
  await openApp(page);
  const region = page.getByRole('region', { name: 'Challenges' });
  await setUp(page, 'Keep up with a busy guest');
  await page.getByLabel('Copy mode').selectOption('write-blocking');
  await page.getByRole('button', { name: 'Start mirror' }).click();
  await expect(jobState(page)).toContainText(/running|ready/);
  await waitReadyAndComplete(page);
  await expect(region.getByRole('status', { name: 'Challenge result' })).toContainText(/^Goal met: READY [\d.]+ s after the start with the guest writing, then completed \(1 command\(s\)\)\.$/, { timeout: 30_000 });
});
