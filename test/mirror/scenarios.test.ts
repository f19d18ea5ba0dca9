/**
 * The qemu-iotests behaviours MIRROR-SEMANTICS.md lists (041, 109, 218, 229,
 * 248), on raw images in memory with fault injection above the formats.
 * Event sequences are asserted as QEMU's .out files show them.
 */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { MirrorOptions } from '../../src/mirror/options.js';
import type { FaultRule } from '../../src/block/fault.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isStatus, isEvent, equalBytes } from '../helpers/images.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Setup {
  size?: number;
  options?: Partial<MirrorOptions>;
  sourceFaults?: FaultRule[];
  targetFaults?: FaultRule[];
  targetCreated?: boolean;
  /** Zero holes in the source (default: none, every byte is data as in 041). */
  holes?: boolean;
}

async function setup(s: Setup = {}) {
  const size = s.size ?? 2 * MiB;
  const src = memoryRaw(size, 3, s.holes ?? false);
  const dst = blankRaw(size);
  const source = new FaultImage(src.image);
  const target = new FaultImage(dst.image);
  for (const r of s.sourceFaults ?? []) source.faults.add(r);
  for (const r of s.targetFaults ?? []) target.faults.add(r);
  const job = await MirrorJob.create({
    source,
    target,
    options: { sync: 'full', id: 'drive0', ...s.options },
    targetCreated: s.targetCreated ?? true,
  });
  const rec = recordEvents(job);
  const equal = () => equalBytes(dst.device.bytes(), src.device.bytes());
  return { job, rec, source, target, src, dst, equal };
}

const once = (op: FaultRule['op'], offset = MiB, errno: FaultRule['errno'] = 'EIO'): FaultRule => ({ op, errno, offset, length: 1, once: true });

const SUCCESS_TAIL = ['ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null'];

async function readyThenComplete(job: MirrorJob): Promise<void> {
  if (!job.ready) await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
  job.complete();
  const r = await job.result;
  expect(r.outcome).toBe('completed');
}

describe('041 TestReadErrors / TestWriteErrors: one EIO at 1 MiB of a 2 MiB image', () => {
  for (const side of ['source', 'target'] as const) {
    const operation = side === 'source' ? 'read' : 'write';
    const faults = (): Setup => (side === 'source' ? { sourceFaults: [once('read')] } : { targetFaults: [once('write')] });
    const policyKey = side === 'source' ? 'on-source-error' : 'on-target-error';

    it(`${side} ${operation}, report: error event, no READY, COMPLETED with error`, async () => {
      const { job, rec } = await setup(faults());
      job.start();
      const result = await job.result;
      expect(result).toMatchObject({ outcome: 'failed', error: 'Input/output error', errno: 'EIO' });
      expect(rec.names()).toEqual(['created', 'running', `ERROR:${operation}:report`, 'aborting', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
      const completed = rec.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED')!;
      expect(completed.data).toMatchObject({ device: 'drive0', type: 'mirror', error: 'Input/output error' });
      const error = rec.events.find((e) => e.event === 'BLOCK_JOB_ERROR')!;
      expect(error.data).toMatchObject({ device: 'drive0', operation, action: 'report', errno: 'EIO', offset: MiB, bytes: MiB });
    });

    it(`${side} ${operation}, ignore: error event, the job goes on, completes, images equal`, async () => {
      const { job, rec, equal } = await setup({ ...faults(), options: { [policyKey]: 'ignore' } });
      job.start();
      await readyThenComplete(job);
      expect(rec.names()).toEqual(['created', 'running', `ERROR:${operation}:ignore`, ...SUCCESS_TAIL]);
      expect(equal()).toBe(true);
    });

    it(`${side} ${operation}, stop: PAUSED with io-status failed; resume, READY, complete, equal`, async () => {
      const { job, rec, equal } = await setup({ ...faults(), options: { [policyKey]: 'stop' } });
      job.start();
      await waitForEvent(job, isStatus('paused'));
      expect(job.query()).toMatchObject({ status: 'paused', paused: true, 'io-status': 'failed' });
      job.resume();
      expect(job.query()['io-status']).toBe('ok');
      await readyThenComplete(job);
      expect(rec.names()).toEqual(['created', 'running', `ERROR:${operation}:stop`, 'paused', 'running', ...SUCCESS_TAIL]);
      expect(equal()).toBe(true);
    });
  }
});

describe('041 general', () => {
  it('complete gives equal images; offset equals len at READY and at the end', async () => {
    const { job, rec, equal } = await setup({ size: 4 * MiB });
    job.start();
    const ready = await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    expect(ready.data).toMatchObject({ len: 4 * MiB, offset: 4 * MiB, speed: 0, type: 'mirror', device: 'drive0' });
    await readyThenComplete(job);
    expect(equal()).toBe(true);
    expect(rec.names()).toEqual(['created', 'running', ...SUCCESS_TAIL]);
  });

  it('force cancel before READY: CANCELLED, target left partial', async () => {
    const { job, rec } = await setup({ size: 32 * MiB, options: { speed: 4 * MiB } });
    job.start();
    await new Promise((r) => setTimeout(r, 60));
    job.cancel(true);
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).toEqual(['created', 'running', 'aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
    const cancelled = rec.events.find((e) => e.event === 'BLOCK_JOB_CANCELLED')!;
    expect((cancelled.data as { offset: number }).offset).toBeLessThan(32 * MiB);
  });

  it('soft cancel after READY: COMPLETED, images equal, offset == len', async () => {
    const { job, rec, equal } = await setup();
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.blockJobCancel(false);
    expect((await job.result).outcome).toBe('completed');
    expect(rec.names()).toEqual(['created', 'running', ...SUCCESS_TAIL]);
    const done = rec.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED')!.data as { offset: number; len: number; error?: string };
    expect(done.error).toBeUndefined();
    expect(done.offset).toBe(done.len);
    expect(equal()).toBe(true);
  });

  it('pause freezes offset', async () => {
    const { job } = await setup({ size: 16 * MiB, options: { speed: 8 * MiB } });
    job.start();
    await new Promise((r) => setTimeout(r, 40));
    job.pause();
    await waitForEvent(job, isStatus('paused'));
    const offset = job.query().offset;
    await new Promise((r) => setTimeout(r, 300));
    expect(job.query().offset).toBe(offset);
    job.resume();
    job.setSpeed(0);
    await readyThenComplete(job);
  });

  it('a tiny buf-size is rounded up to the granularity and works', async () => {
    const { job, equal } = await setup({ options: { 'buf-size': 4096 } });
    expect(job.options.bufSize).toBe(64 * KiB);
    job.start();
    await readyThenComplete(job);
    expect(equal()).toBe(true);
  });

  it('mirroring into itself and a size mismatch are refused', async () => {
    const a = memoryRaw(MiB).image;
    await expect(MirrorJob.create({ source: a, target: a, options: { sync: 'full' } })).rejects.toThrow("Can't mirror node into itself");
    await expect(MirrorJob.create({ source: a, target: blankRaw(2 * MiB).image, options: { sync: 'full' } })).rejects.toThrow(
      /Source and target image have different sizes/,
    );
  });

  it('a zero-length image goes READY at once and completes', async () => {
    const { job, rec } = await setup({ size: 0 });
    job.start();
    await readyThenComplete(job);
    expect(rec.names()).toEqual(['created', 'running', ...SUCCESS_TAIL]);
    expect(job.query()).toMatchObject({ len: 0, offset: 0 });
  });

  it('an unaligned length (1025 KiB) works; the last chunk is clipped', async () => {
    const { job, equal, rec } = await setup({ size: 1025 * KiB });
    job.start();
    await readyThenComplete(job);
    expect(equal()).toBe(true);
    const done = rec.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED')!.data as { offset: number; len: number };
    expect(done).toMatchObject({ offset: 1025 * KiB, len: 1025 * KiB });
  });

  it('granularity 8 KiB works, on a 10 MiB image', async () => {
    const { job, equal, rec } = await setup({ size: 10 * MiB, options: { granularity: 8 * KiB } });
    job.start();
    await readyThenComplete(job);
    expect(equal()).toBe(true);
    expect(rec.names().filter((n) => !/^[a-z]+$/.test(n))[0]).toBe('BLOCK_JOB_READY');
  });

  it('granularity is validated as QEMU does', async () => {
    await expect(setup({ options: { granularity: 256 } })).rejects.toThrow("Parameter 'granularity' expects a value in range [512B, 64MB]");
    await expect(setup({ options: { granularity: 3 * 4096 } })).rejects.toThrow("Parameter 'granularity' expects a power of 2");
  });

  it('negative speed is refused at creation and by set-speed', async () => {
    await expect(setup({ options: { speed: -1 } })).rejects.toThrow("Parameter 'speed' expects a non-negative value");
    const { job } = await setup({ options: { speed: MiB } });
    expect(() => job.setSpeed(-1)).toThrow("Parameter 'speed' expects a non-negative value");
    job.setSpeed(8 * MiB);
    expect(job.query().speed).toBe(8 * MiB);
    job.start();
    job.cancel();
    await job.result;
  });
});

describe('229: target write EIO with stop, then force cancel', () => {
  it('PAUSED; force cancel resumes it and CANCELLED follows', async () => {
    const { job, rec } = await setup({ targetFaults: [once('write')], options: { 'on-source-error': 'stop', 'on-target-error': 'stop' } });
    job.start();
    await waitForEvent(job, isStatus('paused'));
    expect(() => job.blockJobCancel(false)).toThrow("The block job for device 'drive0' is currently paused");
    job.blockJobCancel(true);
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).toEqual(['created', 'running', 'ERROR:write:stop', 'paused', 'running', 'aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  });
});

describe('248: a full target with on-target-error=enospc', () => {
  it('pauses with io-status nospace; lift the limit, resume, it completes', async () => {
    const { job, rec, target, equal } = await setup({
      size: 5 * MiB,
      options: { 'on-target-error': 'enospc' },
      targetFaults: [{ op: 'write', errno: 'ENOSPC', offset: 2 * MiB, length: null, once: false }],
    });
    job.start();
    await waitForEvent(job, isStatus('paused'));
    expect(job.query()).toMatchObject({ status: 'paused', 'io-status': 'nospace' });
    const err = rec.events.find((e) => e.event === 'BLOCK_JOB_ERROR')!;
    expect(err.data).toMatchObject({ operation: 'write', action: 'stop', errno: 'ENOSPC' });
    target.faults.clear();
    job.resume();
    await readyThenComplete(job);
    expect(equal()).toBe(true);
  });

  it('enospc reports (fails) on an error that is not ENOSPC', async () => {
    const { job } = await setup({ options: { 'on-target-error': 'enospc' }, targetFaults: [once('write')] });
    job.start();
    expect(await job.result).toMatchObject({ outcome: 'failed', errno: 'EIO' });
  });
});

describe('218: cancel variants', () => {
  for (const force of [false, true]) {
    it(`before READY, force=${force}: CANCELLED`, async () => {
      const { job, rec } = await setup({ size: MiB, options: { speed: 64 * KiB, 'buf-size': 64 * KiB } });
      job.start();
      await new Promise((r) => setTimeout(r, 30));
      job.blockJobCancel(force);
      expect((await job.result).outcome).toBe('cancelled');
      expect(rec.names().at(-3)).toBe('BLOCK_JOB_CANCELLED');
      const data = rec.events.find((e) => e.event === 'BLOCK_JOB_CANCELLED')!.data as { len: number; offset: number; speed: number };
      expect(data.len).toBe(MiB);
      expect(data.offset).toBeLessThan(MiB);
      expect(data.speed).toBe(64 * KiB);
    });
  }

  it('after READY, soft: COMPLETED; force: CANCELLED with offset == len', async () => {
    for (const force of [false, true]) {
      const { job, rec } = await setup({ size: MiB });
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
      job.blockJobCancel(force);
      await job.result;
      const last = rec.events.filter((e) => e.event.startsWith('BLOCK_JOB_')).at(-1)!;
      expect(last.event).toBe(force ? 'BLOCK_JOB_CANCELLED' : 'BLOCK_JOB_COMPLETED');
      expect(last.data).toMatchObject({ len: MiB, offset: MiB });
    }
  });
});

describe('verbs refused in the wrong state change nothing', () => {
  it('complete while running, resume when not paused, dismiss while running', async () => {
    const { job } = await setup({ size: 8 * MiB, options: { speed: 2 * MiB } });
    job.start();
    const before = job.query();
    expect(() => job.complete()).toThrow("Job 'drive0' in state 'running' cannot accept command verb 'complete'");
    expect(() => job.resume()).toThrow("Can't resume a job that was not paused");
    expect(() => job.dismiss()).toThrow("Job 'drive0' in state 'running' cannot accept command verb 'dismiss'");
    expect(() => job.finalize()).toThrow("cannot accept command verb 'finalize'");
    expect(job.query()).toMatchObject({ status: before.status, paused: false, ready: false });
    job.cancel();
    await job.result;
  });

  it('auto-finalize and auto-dismiss off: PENDING waits for finalize, CONCLUDED for dismiss', async () => {
    const { job, rec } = await setup({ options: { 'auto-finalize': false, 'auto-dismiss': false } });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await waitForEvent(job, isEvent('BLOCK_JOB_PENDING'));
    expect(job.status).toBe('pending');
    job.finalize();
    await waitForEvent(job, isStatus('concluded'));
    expect(job.query().status).toBe('concluded');
    job.dismiss();
    await job.result;
    expect(rec.names().slice(-6)).toEqual(['waiting', 'pending', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  });
});

describe('errors after READY', () => {
  it('stop: READY -> STANDBY, resume -> READY; the job stays ready', async () => {
    const { job, rec, target, equal } = await setup({ options: { 'on-target-error': 'stop' } });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    target.faults.add(once('write', 100_000));
    // Listen first: the copy that meets the fault may run before the write's promise settles.
    const seen = waitForEvent(job, isStatus('standby'));
    await job.sourceWrite(90_000, new Uint8Array(20_000).fill(9));
    await seen;
    expect(job.query()).toMatchObject({ status: 'standby', ready: true, paused: true, 'io-status': 'failed' });
    job.resume();
    await waitForEvent(job, (e) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'ready' && rec.names().includes('standby'));
    await readyThenComplete(job);
    expect(rec.names()).toEqual(['created', 'running', 'ready', 'BLOCK_JOB_READY', 'ERROR:write:stop', 'standby', 'ready', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
    expect(equal()).toBe(true);
  });

  it('ignore: the error does not take the job out of READY', async () => {
    const { job, rec, target, equal } = await setup({ options: { 'on-target-error': 'ignore' } });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    target.faults.add(once('write', 100_000));
    // Listen first: the copy that meets the fault may run before the write's promise settles.
    const seen = waitForEvent(job, isEvent('BLOCK_JOB_ERROR'));
    await job.sourceWrite(90_000, new Uint8Array(20_000).fill(9));
    await seen;
    expect(job.status).toBe('ready');
    expect(job.ready).toBe(true);
    await readyThenComplete(job);
    expect(rec.names().filter((n) => n === 'ready')).toHaveLength(1);
    expect(equal()).toBe(true);
  });

  it('report after READY fails the job: READY -> ABORTING', async () => {
    const { job, rec, target } = await setup();
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    target.faults.add(once('write', 100_000));
    await job.sourceWrite(90_000, new Uint8Array(20_000).fill(9));
    expect(await job.result).toMatchObject({ outcome: 'failed', error: 'Input/output error' });
    expect(rec.names().slice(-6)).toEqual(['BLOCK_JOB_READY', 'ERROR:write:report', 'aborting', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  });
});
