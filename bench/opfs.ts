/**
 * OPFS benchmark, in Chromium: the mirror job copying a file in OPFS against
 * a plain loop of sync-handle reads and writes over the same file, measured
 * in the same run (the plain loop is as fast as OPFS allows).
 *
 *   npm run bench:opfs [-- MEGABYTES]
 */
import { createServer } from 'vite';
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const megabytes = Number(process.argv[2] ?? 256);
const root = fileURLToPath(new URL('../../../', import.meta.url));
const server = await createServer({ configFile: join(root, 'test/e2e/harness/vite.config.ts'), server: { port: 0, strictPort: false }, logLevel: 'error' });
await server.listen();
const url = server.resolvedUrls!.local[0]!;
const profile = mkdtempSync(join(tmpdir(), 'diskmirror-bench-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(url);
  await page.waitForFunction(() => (globalThis as unknown as { harnessReady?: boolean }).harnessReady === true);
  const r = (await page.evaluate(
    (mb) => (globalThis as unknown as { runInWorker(s: string, a: object): Promise<Record<string, number>> }).runInWorker('bench-opfs', { megabytes: mb }),
    megabytes,
  )) as Record<string, number>;
  const best = (prefix: string) => Math.min(r[`${prefix}_ms_0`]!, r[`${prefix}_ms_1`]!);
  const mbps = (ms: number) => (megabytes / (ms / 1000)).toFixed(0);
  console.log(`OPFS copy of ${megabytes} MiB of random data in Chromium (best of 2):`);
  console.log(`  plain sync-handle loop (1 MiB read + write): ${best('plain').toFixed(0)} ms, ${mbps(best('plain'))} MiB/s`);
  console.log(`  diskmirror mirror job (raw to raw):          ${best('mirror').toFixed(0)} ms, ${mbps(best('mirror'))} MiB/s`);
  console.log(`opfs mirror/plain time ratio: ${(best('mirror') / best('plain')).toFixed(2)}`);
} finally {
  await context.close();
  await server.close();
  rmSync(profile, { recursive: true, force: true });
}
