import { test, expect } from './fixtures.js';

test('the BlockDevice contract holds for OPFS, inside a worker in Chromium', async ({ page, harnessURL }) => {
  await page.goto(harnessURL);
  await page.waitForFunction(() => (window as unknown as { harnessReady?: boolean }).harnessReady === true);
  const results = await page.evaluate(() =>
    (window as unknown as { runInWorker(s: string): Promise<{ name: string; ok: boolean; error?: string }[]> }).runInWorker('opfs-contract'),
  );
  for (const r of results) console.log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.error ? `\n${r.error}` : ''}`);
  expect(results.length).toBeGreaterThan(15);
  expect(results.filter((r) => !r.ok)).toEqual([]);
});
