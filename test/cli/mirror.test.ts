/**
 * diskmirror mirror, end to end in a child process: plain mode, QMP mode,
 * stops and resumes, interruptions, and kills at random moments.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pattern } from '../contract/device-contract.js';
import { killAfter, run, QmpSession, BIN } from '../helpers/cli.js';
import { qemuCompare, requireQemu } from '../helpers/qemu.js';
import { rng } from '../helpers/random.js';
import { execFileSync, spawn } from 'node:child_process';
import { requireBuiltCommand } from '../helpers/require-program.js';

const MiB = 1 << 20;
let dir: string;
let n = 0;

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-cli-'));
});
afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

/** A raw source with data and holes; returns its path and bytes. */
function source(bytes: number, seed = 1): { path: string; data: Uint8Array } {
  const path = join(dir, `src${n++}.raw`);
  const data = pattern(bytes, seed);
  for (let off = 0; off < bytes; off += 700_000) data.fill(0, off, Math.min(bytes, off + 200_000));
  writeFileSync(path, data);
  return { path, data };
}

const target = () => join(dir, `dst${n++}.raw`);

describe('diskmirror mirror, plain mode', () => {
  it('creates the target, completes at READY, exits 0; qemu-img compare agrees', async () => {
    const src = source(3 * MiB + 777);
    const dst = target();
    const r = await run(['mirror', src.path, dst]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
    expect(existsSync(`${dst}.dmcheckpoint`)).toBe(false);
  });

  it('bad usage is one line on stderr and exit 2', async () => {
    for (const args of [['mirror', 'only-one'], ['mirror', '--sync', 'most', 'a', 'b'], ['mirror', '--inject', 'source:read:EWHAT:1M', 'a', 'b']]) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
  });

  it('a missing source is exit 2, naming the file', async () => {
    const r = await run(['mirror', join(dir, 'nope.raw'), target()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nope\.raw.*ENOENT|ENOENT.*nope\.raw/);
  });

  it('report: the error on stderr, exit 1', async () => {
    const src = source(2 * MiB);
    const dst = target();
    const r = await run(['mirror', '--inject', 'target:write:EIO:1M', src.path, dst]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/write error \(EIO\)/);
    expect(r.stderr).toMatch(/the job failed: Input\/output error/);
    // A failed job keeps its checkpoint: fix the cause and --resume.
    expect(existsSync(`${dst}.dmcheckpoint`)).toBe(true);
  });

  it('stop without a terminal: waits for "resume" on stdin, then completes', async () => {
    const src = source(2 * MiB, 2);
    const dst = target();
    const r = await run(['mirror', '--inject', 'source:read:EIO:1M:once', '--on-source-error', 'stop', src.path, dst], 'resume\n');
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/read error \(EIO\)/);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
  });

  it('stop without a terminal: says it waits, and a later "resume" on stdin completes the job', async () => {
    const src = source(2 * MiB, 12);
    const dst = target();
    const child = spawn(process.execPath, [BIN, 'mirror', '--inject', 'target:write:EIO:1M:once', '--on-target-error', 'stop', src.path, dst]);
    let stderr = '';
    const waiting = new Promise<void>((resolve) =>
      child.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.includes('waiting for "resume" or "cancel" on stdin')) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await waiting;
    child.stdin.write('resume\n');
    expect(await exited).toBe(0);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
  });

  it('stop, then "cancel" on stdin: exit 1', async () => {
    const src = source(2 * MiB, 3);
    const dst = target();
    const r = await run(['mirror', '--inject', 'source:read:EIO:1M:once', '--on-source-error', 'stop', src.path, dst], 'cancel\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cancelled/);
    // Cancelled on purpose: nothing to resume.
    expect(existsSync(`${dst}.dmcheckpoint`)).toBe(false);
  });
});

describe('diskmirror mirror --qmp', () => {
  it('source read EIO once with stop: paused, failed; job-resume; READY; job-complete; identical', async () => {
    const src = source(2 * MiB, 4);
    const dst = target();
    const s = new QmpSession(['mirror', '--qmp', '--inject', 'source:read:EIO:1M:once', '--on-source-error', 'stop', src.path, dst]);
    await s.status('paused');
    const jobs = (await s.execute('query-block-jobs')).return as Record<string, unknown>[];
    expect(jobs[0]).toMatchObject({ device: 'mirror', status: 'paused', paused: true, 'io-status': 'failed', type: 'mirror' });
    const error = await s.event('BLOCK_JOB_ERROR');
    expect(error.data).toMatchObject({ operation: 'read', action: 'stop', errno: 'EIO', offset: MiB });
    expect(await s.execute('job-resume', { id: 'mirror' })).toMatchObject({ return: {} });
    await s.event('BLOCK_JOB_READY');
    const afterResume = (await s.execute('query-block-jobs')).return as Record<string, unknown>[];
    expect(afterResume[0]).toMatchObject({ 'io-status': 'ok', ready: true, status: 'ready' });
    expect(await s.execute('job-complete', { id: 'mirror' })).toMatchObject({ return: {} });
    expect((await s.close()).code).toBe(0);
    expect(s.events()).toEqual(['created', 'running', 'BLOCK_JOB_ERROR', 'paused', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
  });

  it('commands: errors in QMP form, faults added and removed live, x-source-write, set-speed', async () => {
    const src = source(4 * MiB, 5);
    const dst = target();
    const s = new QmpSession(['mirror', '--qmp', '--speed', '1M', src.path, dst]);
    await s.status('running');
    expect(await s.execute('job-complete', { id: 'mirror' })).toMatchObject({
      error: { class: 'GenericError', desc: "Job 'mirror' in state 'running' cannot accept command verb 'complete'" },
    });
    expect(await s.execute('job-pause', { id: 'nope' })).toMatchObject({ error: { class: 'GenericError', desc: 'Job not found' } });
    expect(await s.execute('block-job-pause', { device: 'nope' })).toMatchObject({ error: { class: 'DeviceNotActive' } });
    expect(await s.execute('no-such-command')).toMatchObject({ error: { class: 'CommandNotFound' } });
    expect(await s.execute('fault-add', { device: 'mirror', rule: 'target:flush:EIO:0' })).toMatchObject({ return: { rule: 'target:flush:EIO:0' } });
    expect(await s.execute('fault-add', { device: 'mirror', rule: 'source:read:EIO:3M-' })).toMatchObject({ return: {} });
    expect((await s.execute('fault-list', { device: 'mirror' })).return).toEqual([
      { side: 'source', index: 0, rule: 'source:read:EIO:3145728-', hits: 0 },
      { side: 'target', index: 1, rule: 'target:flush:EIO:0', hits: 0 },
    ]);
    expect(await s.execute('fault-remove', { device: 'mirror', all: true })).toMatchObject({ return: {} });
    expect(await s.execute('block-job-set-speed', { device: 'mirror', speed: -5 })).toMatchObject({
      error: { desc: "Parameter 'speed' expects a non-negative value" },
    });
    expect(await s.execute('block-job-set-speed', { device: 'mirror', speed: 0 })).toMatchObject({ return: {} });
    await s.event('BLOCK_JOB_READY');
    expect(await s.execute('x-source-write', { device: 'mirror', offset: 1000, bytes: 5000, pattern: 0xee })).toMatchObject({ return: {} });
    expect(await s.execute('block-job-cancel', { device: 'mirror' })).toMatchObject({ return: {} });
    expect((await s.close()).code).toBe(0);
    const written = readFileSync(src.path).subarray(1000, 6000);
    expect(written.every((b) => b === 0xee)).toBe(true);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
  });

  it('SIGTERM checkpoints and exits 130; --resume copies only what was still dirty', async () => {
    const src = source(8 * MiB, 6);
    const dst = target();
    const s = new QmpSession(['mirror', '--qmp', '--speed', '4M', '--checkpoint-interval', '0.1', src.path, dst]);
    await s.status('running');
    // Interrupt once some data has moved (and well before the end at this speed).
    for (;;) {
      const [job] = (await s.execute('query-block-jobs')).return as { offset: number }[];
      if (job!.offset >= 1 << 20) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    s.child.kill('SIGTERM');
    expect((await s.exited).code, s.stderr).toBe(130);
    expect(s.stderr).toMatch(/interrupted; the checkpoint is in/);
    expect(existsSync(`${dst}.dmcheckpoint`)).toBe(true);
    const r = new QmpSession(['mirror', '--qmp', '--resume', '--speed', '0', src.path, dst]);
    const ready = await r.event('BLOCK_JOB_READY');
    const len = (ready.data as { len: number }).len;
    expect(len, r.stderr).toBeGreaterThan(0);
    expect(len, r.stderr).toBeLessThanOrEqual(8 * MiB - MiB); // at least the 1 MiB done before the signal is not copied again
    await r.execute('job-complete', { id: 'mirror' });
    expect((await r.close()).code).toBe(0);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
    expect(existsSync(`${dst}.dmcheckpoint`)).toBe(false);
  });

  it('an existing checkpoint without --resume is refused with a clear message', async () => {
    const src = source(MiB, 7);
    const dst = target();
    writeFileSync(`${dst}.dmcheckpoint`, '{}');
    writeFileSync(dst, new Uint8Array(MiB));
    const r = await run(['mirror', src.path, dst]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--resume/);
    const bad = await run(['mirror', '--resume', src.path, dst]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a diskmirror checkpoint/);
  });

  it('--resume accepts the options the job started with and names each one that differs', async () => {
    const src = source(8 * MiB, 13);
    const dst = target();
    const s = new QmpSession(['mirror', '--qmp', '--speed', '2M', '--granularity', '128K', src.path, dst]);
    await s.status('running');
    s.child.kill('SIGTERM');
    expect((await s.exited).code).toBe(130);
    const r = await run(['mirror', '--resume', '--granularity', '64K', '--sync', 'none', '--on-source-error', 'ignore', src.path, dst]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/these differ: --sync none \(the job started with full\), --granularity 64K \(the job started with 131072\), --on-source-error ignore \(the job started with report\)/);
    // The same command line with --resume added (and a new speed) goes on.
    const ok = await run(['mirror', '--resume', '--speed', '0', '--granularity', '128K', '--sync', 'full', src.path, dst]);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await qemuCompare(src.path, dst)).code).toBe(0);
  });
});

describe('kill and resume', () => {
  it('SIGKILL at 20 seeded moments: each resume yields an identical target', async () => {
    const next = rng(2024);
    const src = source(6 * MiB, 8);
    const points = Array.from({ length: 20 }, () => Math.floor(80 + next() * 1400));
    const killOnce = (dst: string, afterMs: number, resume: boolean, anchored = false) =>
      killAfter(['mirror', '--speed', '4M', '--checkpoint-interval', '0.1', ...(resume ? ['--resume'] : []), src.path, dst], afterMs, anchored ? `${dst}.dmcheckpoint` : undefined);
    // Two at a time: the machine has two cores.
    let resumed = 0;
    const one = async (i: number) => {
      const dst = join(dir, `killed${i}.raw`);
      // Even points count from the start (a kill may land while the process starts); odd ones from the first checkpoint, mid-copy however loaded the machine.
      await killOnce(dst, i % 2 === 0 ? points[i]! : points[i]! % 900, false, i % 2 === 1);
      // A second kill during the resume, for half of the points.
      if (i % 2 === 0 && existsSync(`${dst}.dmcheckpoint`)) await killOnce(dst, 150 + (i * 37) % 400, true);
      const resumeArgs = existsSync(`${dst}.dmcheckpoint`) ? ['--resume'] : [];
      if (resumeArgs.length) resumed++;
      const r = await run(['mirror', ...resumeArgs, '--speed', '0', src.path, dst]);
      expect(r.code, `point ${i} (${points[i]} ms): ${r.stderr}`).toBe(0);
      expect((await qemuCompare(src.path, dst)).code, `point ${i} (${points[i]} ms)`).toBe(0);
    };
    for (let i = 0; i < points.length; i += 2) await Promise.all([one(i), one(i + 1)]);
    // Most kills landed mid-copy, so most runs really resumed from a checkpoint.
    expect(resumed).toBeGreaterThanOrEqual(10);
  }, 240_000);
});

// Found by the fuzzer's fixes (npm run fuzz): the bitmap was sized after the target was made.
describe('a bitmap the kernel cannot hold', () => {
  it('an 8 TiB image at granularity 512 is refused before anything is created, naming the granularity that works', async () => {
    requireBuiltCommand();
    const src = join(dir, 'huge.raw');
    execFileSync('truncate', ['-s', '8T', src]);
    const out = join(dir, 'huge-copy.raw');
    const r = await run(['mirror', '--granularity', '512', src, out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('too large for granularity 512');
    expect(r.stderr).toContain('use a granularity of 2048 or more');
    expect(existsSync(out)).toBe(false);
  });
});
