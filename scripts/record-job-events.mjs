#!/usr/bin/env node
// Records what real QEMU says of a mirror job, for the page's job store
// tests (test/ui/job-store.test.ts): for each scenario, the events QEMU
// sends (timestamps stripped) and, at the moments that matter, what
// query-block-jobs answers then (status, io-status, paused, ready), which
// is the truth the store's state is checked against.
//
// QEMU runs as the differential test runs it (test/helpers/qemu-mirror.ts,
// bundled here with rolldown: qemu-system-x86_64 -machine none -qmp stdio;
// file, blkdebug and raw nodes; blockdev-mirror with on-source-error and
// on-target-error; the job verbs). Output: test/ui/recorded/NAME.json,
// small text, committed. Run again after a QEMU upgrade:
//
//   node scripts/record-job-events.mjs [NAME...]
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { rolldown } from 'rolldown';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(root, 'test', 'ui', 'recorded');
const MiB = 1 << 20;
const SIZE = 4 * MiB;
const EIO = 5;
const JOB = 'job0';

async function loadHelper() {
  const dir = mkdtempSync(join(tmpdir(), 'record-job-events-'));
  const bundle = await rolldown({ input: join(root, 'test', 'helpers', 'qemu-mirror.ts'), platform: 'node', logLevel: 'silent' });
  const file = join(dir, 'qemu-mirror.mjs');
  await bundle.write({ file, format: 'esm' });
  const mod = await import(pathToFileURL(file).href);
  rmSync(dir, { recursive: true, force: true });
  return mod;
}

/** A scenario: the source's blkdebug rules, the mirror's options, and what is done to the job. */
const SCENARIOS = {
  completed: {
    about: 'READY, then job-complete: COMPLETED without error',
    async run(s) {
      await s.event('BLOCK_JOB_READY');
      await s.query('at READY');
      await s.cmd('job-complete', { id: JOB });
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
  'cancel-after-ready': {
    about: 'READY, then block-job-cancel without force: COMPLETED (the copy finishes without switching over)',
    async run(s) {
      await s.event('BLOCK_JOB_READY');
      await s.cmd('block-job-cancel', { device: JOB, force: false });
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
  'force-cancel': {
    about: 'under a speed limit, block-job-cancel with force before READY: CANCELLED',
    mirror: { speed: 512 * 1024 },
    async run(s) {
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'running');
      await s.query('running');
      await s.cmd('block-job-cancel', { device: JOB, force: true });
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
  'stop-then-resume': {
    about: 'a source read fails once under on-source-error=stop: BLOCK_JOB_ERROR stop, paused (io-status failed); job-resume; READY; complete',
    inject: [{ event: 'read_aio', errno: EIO, sector: (1 * MiB) / 512, iotype: 'read', once: true }],
    mirror: { 'on-source-error': 'stop' },
    async run(s) {
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'paused');
      await s.query('stopped');
      await s.cmd('job-resume', { id: JOB });
      await s.event('BLOCK_JOB_READY');
      await s.query('at READY after the resume');
      await s.cmd('job-complete', { id: JOB });
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
  'report-failure': {
    about: 'a source read fails under on-source-error=report: BLOCK_JOB_ERROR report, COMPLETED with an error',
    inject: [{ event: 'read_aio', errno: EIO, sector: (1 * MiB) / 512, iotype: 'read', once: false }],
    mirror: { 'on-source-error': 'report' },
    async run(s) {
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
  'ignore-errors': {
    about: 'two source reads fail once each under on-source-error=ignore: two BLOCK_JOB_ERROR ignore, the ranges retried, READY, complete',
    inject: [
      { event: 'read_aio', errno: EIO, sector: (1 * MiB) / 512, iotype: 'read', once: true },
      { event: 'read_aio', errno: EIO, sector: (3 * MiB) / 512, iotype: 'read', once: true },
    ],
    mirror: { 'on-source-error': 'ignore' },
    async run(s) {
      await s.event('BLOCK_JOB_READY');
      await s.query('at READY');
      await s.cmd('job-complete', { id: JOB });
      await s.event('JOB_STATUS_CHANGE', (d) => d.status === 'null');
    },
  },
};

async function record(helper, name, sc) {
  const dir = mkdtempSync(join(tmpdir(), `record-${name}-`));
  const source = join(dir, 'source.raw');
  const target = join(dir, 'target.raw');
  // Data everywhere (a hole would not be read, and a read fault there never fire).
  writeFileSync(source, randomFillSync(Buffer.alloc(SIZE)));
  writeFileSync(target, Buffer.alloc(SIZE));
  const qemu = await helper.QemuMirror.start(dir);
  /** What is kept: events (no timestamp), commands sent, and query-block-jobs' answers at marks. */
  const steps = [];
  let seen = 0;
  const take = () => {
    for (; seen < qemu.events.length; seen++) {
      const { event, data } = qemu.events[seen];
      steps.push({ event, data });
    }
  };
  const s = {
    async event(event, test = () => true) {
      const e = await qemu.qmp.waitEvent((x) => x.event === event && test(x.data), 20_000);
      if (!e) throw new Error(`${name}: no ${event} within 20 s; events: ${JSON.stringify(qemu.events.map((x) => x.event))}`);
      take();
    },
    async cmd(command, args) {
      take();
      const answer = await qemu.execute(command, args);
      steps.push({ command, arguments: args, answer: 'return' in answer ? 'return' : answer });
      take();
    },
    async query(mark) {
      take();
      const answer = await qemu.execute('query-block-jobs');
      const job = 'return' in answer ? answer.return.find((j) => j.device === JOB) : undefined;
      if (!job) throw new Error(`${name}: query-block-jobs at ${mark}: ${JSON.stringify(answer)}`);
      steps.push({ query: mark, job: { status: job.status, 'io-status': job['io-status'], paused: job.paused, ready: job.ready } });
      take();
    },
  };
  try {
    await qemu.addImage('src', source, { inject: sc.inject ?? [] });
    await qemu.addImage('dst', target);
    const started = await qemu.mirror({ 'job-id': JOB, device: 'src', target: 'dst', sync: 'full', ...(sc.mirror ?? {}) });
    if (!('return' in started)) throw new Error(`${name}: blockdev-mirror: ${JSON.stringify(started)}`);
    await sc.run(s);
    take();
  } finally {
    await qemu.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const version = execFileSync(helper.QEMU_SYSTEM, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  return { scenario: name, about: sc.about, qemu: version, job: JOB, size: SIZE, steps };
}

const wanted = process.argv.slice(2);
const helper = await loadHelper();
helper.requireQemuSystem();
mkdirSync(OUT, { recursive: true });
for (const [name, sc] of Object.entries(SCENARIOS)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  const recorded = await record(helper, name, sc);
  writeFileSync(join(OUT, `${name}.json`), `${JSON.stringify(recorded, null, 1)}\n`);
  console.log(`${name}: ${recorded.steps.length} steps (${recorded.steps.filter((x) => x.event).length} events)`);
}
