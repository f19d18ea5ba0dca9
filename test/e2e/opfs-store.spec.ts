/** The OPFS FileStore (Web Locks, publish by move) and the transfer of image conflicts, inside a worker in Chromium. */
import { test, expect } from './fixtures.js';

test('the OPFS FileStore locks, identifies and publishes images as image-access.ts expects', async ({ page, harnessURL }) => {
  await page.goto(harnessURL);
  await page.waitForFunction(() => (window as unknown as { harnessReady?: boolean }).harnessReady === true);
  const results = await page.evaluate(() =>
    (window as unknown as { runInWorker(s: string): Promise<{ name: string; ok: boolean; error?: string }[]> }).runInWorker('opfs-store'),
  );
  for (const r of results) console.log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.error ? `\n${r.error}` : ''}`);
  expect(results.length).toBeGreaterThan(8);
  expect(results.filter((r) => !r.ok)).toEqual([]);
});
