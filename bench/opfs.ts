/**
 * diskmirror in Chromium against the most OPFS allows, in the same run:
 *
 * 1. In a worker, the mirror job copying a disk in OPFS against a plain loop
 *    of sync-handle reads and writes over the same data (1 MiB each): raw to
 *    raw and qcow2 to raw, 256 MiB and 1 GiB, interleaved, at least 5 runs
 *    each. Speed ratio = the plain loop's median time over the job's.
 * 2. In the app itself (the built page, as a person uses it): a 1 GiB file
 *    imported and then mirrored, while Chromium traces the page's main
 *    thread; prints the longest main-thread task (a PerformanceObserver of
 *    long tasks, and the trace's longest) and the share of the main thread
 *    spent on anything at all (progress, pictures, layout, paint) while the
 *    job ran.
 *
 *   npm run bench:opfs            (BENCH_RUNS=7 for more runs, BENCH_SIZES=256,1024)
 *
 * Writes bench/results/opfs.json; the last line is
 * `worst opfs mirror/plain speed ratio: N`.
 */
import { createServer, preview } from 'vite';
import { chromium, type Page } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUNS = Math.max(5, Number(process.env.BENCH_RUNS ?? 5));
const SIZES = (process.env.BENCH_SIZES ?? '256,1024').split(',').map(Number);
const APP_MIB = 1024;
const root = fileURLToPath(new URL('../../../', import.meta.url));
const RESULTS = join(root, 'bench/results');
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

interface Stats {
  median: number;
  min: number;
  max: number;
}
interface Row {
  name: string;
  mirror: Stats;
  plain: Stats;
  /** The plain loop's median time over the job's (1: as fast as OPFS allows). */
  ratio: number;
}

function chromiumVersion(): string {
  try {
    return execFileSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
}

async function workerCases(page: Page): Promise<Row[]> {
  const rows: Row[] = [];
  for (const format of ['raw', 'qcow2'] as const) {
    for (const mib of SIZES) {
      const r = (await page.evaluate(
        (a) => (globalThis as unknown as { runInWorker(s: string, a: object): Promise<unknown> }).runInWorker('bench-opfs', a),
        { megabytes: mib, runs: RUNS, format },
      )) as { plain: number[]; mirror: number[] } | { error: string };
      if ('error' in r) throw new Error(r.error);
      const mirror = stats(r.mirror);
      const plain = stats(r.plain);
      const size = mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`;
      rows.push({ name: `${format} to raw (${size})`, mirror, plain, ratio: plain.median / mirror.median });
    }
  }
  return rows;
}

interface MainThread {
  phase: string;
  seconds: number;
  longestTaskObservedMs: number;
  longTasks: number;
  longestTraceTaskMs: number;
  /** Share of the time the page's main thread ran anything. */
  busyShare: number;
  /** Share spent on rendering: style, layout, pre-paint, paint, layerize. */
  renderShare: number;
  /** Share spent running the page's scripts (progress handling, pictures, the log). */
  scriptShare: number;
}

/** Runs `during` with Chromium tracing the page's main thread; returns its busy share and longest task. */
async function traced(page: Page, phase: string, during: () => Promise<void>): Promise<MainThread> {
  const cdp = await page.context().newCDPSession(page);
  await page.evaluate(() => {
    (globalThis as unknown as { longTasks: number[] }).longTasks.length = 0;
  });
  await cdp.send('Tracing.start', { categories: 'toplevel,devtools.timeline,__metadata', transferMode: 'ReturnAsStream' });
  const t0 = Date.now();
  await during();
  const seconds = (Date.now() - t0) / 1000;
  const complete = new Promise<{ stream?: string }>((resolve) => cdp.once('Tracing.tracingComplete', resolve));
  await cdp.send('Tracing.end');
  const { stream } = await complete;
  let text = '';
  for (;;) {
    const chunk = await cdp.send('IO.read', { handle: stream!, size: 1 << 20 });
    text += chunk.base64Encoded ? Buffer.from(chunk.data, 'base64').toString() : chunk.data;
    if (chunk.eof) break;
  }
  await cdp.send('IO.close', { handle: stream! });
  await cdp.detach();
  const parsed = JSON.parse(text) as { traceEvents: { name: string; ph: string; pid: number; tid: number; ts: number; dur?: number; args?: { name?: string } }[] };
  const events = parsed.traceEvents;
  const mains = new Set(events.filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`));
  // Top-level tasks (RunTask; nested ones lie inside their parent and are merged away).
  const tasks = events
    .filter((e) => (e.name === 'ThreadControllerImpl::RunTask' || e.name === 'RunTask') && e.ph === 'X' && mains.has(`${e.pid}:${e.tid}`))
    .sort((a, b) => a.ts - b.ts);
  // The renderer of this page is the one whose main thread was busiest (others are idle pages, if any).
  const byThread = new Map<string, { busy: number; longest: number; end: number }>();
  for (const t of tasks) {
    const key = `${t.pid}:${t.tid}`;
    const b = byThread.get(key) ?? { busy: 0, longest: 0, end: 0 };
    const end = t.ts + (t.dur ?? 0);
    if (end > b.end) {
      b.busy += end - Math.max(t.ts, b.end);
      b.end = end;
    }
    b.longest = Math.max(b.longest, t.dur ?? 0);
    byThread.set(key, b);
  }
  const [mainKey, main] = [...byThread.entries()].sort((a, b) => b[1].busy - a[1].busy)[0] ?? ['', { busy: 0, longest: 0 }];
  const sum = (names: string[]) =>
    events.filter((e) => e.ph === 'X' && names.includes(e.name) && `${e.pid}:${e.tid}` === mainKey).reduce((t, e) => t + (e.dur ?? 0), 0) / 1e6 / seconds;
  const observed = await page.evaluate(() => (globalThis as unknown as { longTasks: number[] }).longTasks.slice());
  return {
    phase,
    seconds,
    longestTaskObservedMs: Math.max(0, ...observed),
    longTasks: observed.length,
    longestTraceTaskMs: main.longest / 1000,
    busyShare: main.busy / 1e6 / seconds,
    renderShare: sum(['UpdateLayoutTree', 'Layout', 'PrePaint', 'Paint', 'Layerize', 'HitTest']),
    scriptShare: sum(['FunctionCall', 'EvaluateScript', 'TimerFire', 'FireAnimationFrame', 'EventDispatch']),
  };
}

/** Imports a 1 GiB file into the app, then mirrors it, each traced. */
async function appCases(page: Page, url: string, dir: string): Promise<MainThread[]> {
  const file = join(dir, 'big.raw');
  const fd = openSync(file, 'w');
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < APP_MIB; i++) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  await page.addInitScript(() => {
    const longTasks: number[] = [];
    (globalThis as unknown as { longTasks: number[] }).longTasks = longTasks;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) longTasks.push(e.duration);
    }).observe({ type: 'longtask' as never, buffered: true });
  });
  page.on('dialog', (d) => void d.accept());
  await page.goto(url);
  await page.locator('body[data-ready="true"]').waitFor({ state: 'attached' });
  const results: MainThread[] = [];
  // Waits poll from the page four times a second: the locator waits of a
  // test harness run on every frame and would count as the page's own work.
  const until = (selector: string, expected: string) =>
    page.waitForFunction(
      ([sel, e]) => {
        const doc = (globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document;
        return doc.querySelector(sel)?.textContent?.includes(e) ?? false;
      },
      [selector, expected] as const,
      { polling: 250, timeout: 300_000 },
    );
  results.push(
    await traced(page, `import of a ${APP_MIB} MiB file`, async () => {
      const chooser = page.waitForEvent('filechooser');
      await page.getByRole('button', { name: 'Import file' }).click();
      await (await chooser).setFiles(file);
      await until('#images-message', 'Imported big.raw');
    }),
  );
  await page.getByRole('combobox', { name: 'Source', exact: true }).selectOption({ label: 'big.raw' });
  await page.getByLabel('Target', { exact: true }).fill('copy.raw');
  results.push(
    await traced(page, `mirror of ${APP_MIB} MiB (raw to raw)`, async () => {
      await page.locator('#start').click();
      await until('#job-state', '— ready');
      await page.locator('button[data-verb="complete"]').click();
      await until('#job-outcome', 'Done:');
    }),
  );
  // Steady state: a long job's progress alone (100 MiB/s), five seconds of it once it runs.
  await page.getByLabel('Target', { exact: true }).fill('slow.raw');
  await page.getByLabel('Speed limit').fill('100M');
  await page.locator('#start').click();
  await until('#job-state', 'running');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  results.push(
    await traced(page, 'progress of a running mirror (100 MiB/s), 5 s', async () => {
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }),
  );
  await page.locator('button[data-verb="force-cancel"]').click();
  await until('#job-outcome', 'Cancelled');
  return results;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'diskmirror-bench-opfs-'));
  const harness = await createServer({ configFile: join(root, 'test/e2e/harness/vite.config.ts'), server: { port: 0, strictPort: false }, logLevel: 'error' });
  await harness.listen();
  const app = await preview({ configFile: join(root, 'vite.config.ts'), preview: { port: 0, strictPort: false, host: 'localhost' }, logLevel: 'error' });
  const launch = (profile: string) =>
    chromium.launchPersistentContext(join(dir, profile), { executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  try {
    console.log(`diskmirror in Chromium against a plain OPFS loop, ${RUNS} interleaved runs each, persistent profile (OPFS on disk in ${tmpdir()})`);
    let context = await launch('worker');
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(harness.resolvedUrls!.local[0]!);
    await page.waitForFunction(() => (globalThis as unknown as { harnessReady?: boolean }).harnessReady === true);
    const rows = await workerCases(page);
    await context.close();
    context = await launch('app');
    const appPage = context.pages()[0] ?? (await context.newPage());
    const mainThread = await appCases(appPage, app.resolvedUrls!.local[0]!, dir);
    await context.close();

    const f = (ms: number) => ms.toFixed(0);
    console.log(`${'case'.padEnd(24)} ${'mirror job ms (min-max)'.padEnd(26)} ${'plain loop ms (min-max)'.padEnd(26)} speed ratio`);
    for (const r of rows) {
      const m = `${f(r.mirror.median)} (${f(r.mirror.min)}-${f(r.mirror.max)})`;
      const p = `${f(r.plain.median)} (${f(r.plain.min)}-${f(r.plain.max)})`;
      console.log(`${r.name.padEnd(24)} ${m.padEnd(26)} ${p.padEnd(26)} ${r.ratio.toFixed(2)}`);
    }
    console.log('every mirror copy: checked against its source');
    console.log(`the app's main thread (${APP_MIB} MiB, unlimited speed):`);
    for (const m of mainThread) {
      console.log(
        `  ${m.phase}: ${m.seconds.toFixed(1)} s; longest task ${m.longestTaskObservedMs.toFixed(0)} ms observed (${m.longTasks} over 50 ms), ` +
          `${m.longestTraceTaskMs.toFixed(1)} ms in the trace; main thread busy ${(m.busyShare * 100).toFixed(1)}% of the time ` +
          `(scripts ${(m.scriptShare * 100).toFixed(1)}%, style/layout/paint ${(m.renderShare * 100).toFixed(1)}%)`,
      );
    }
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(
      join(RESULTS, 'opfs.json'),
      `${JSON.stringify({ date: new Date().toISOString(), cpus: availableParallelism(), chromium: chromiumVersion(), runs: RUNS, rows, mainThread }, null, 2)}\n`,
    );
    console.log(`longest main-thread task during a job: ${Math.max(...mainThread.map((m) => m.longestTaskObservedMs)).toFixed(0)} ms`);
    console.log(`worst opfs mirror/plain speed ratio: ${Math.min(...rows.map((r) => r.ratio)).toFixed(2)}`);
  } finally {
    await harness.close();
    await new Promise<void>((resolve) => app.httpServer.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
