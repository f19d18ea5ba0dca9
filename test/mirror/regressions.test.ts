/** Defects found in review, each with the case that showed it. */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { MirrorControl } from '../../src/mirror/control.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { BlockError } from '../../src/block/block-device.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { createImage } from '../../src/format/open.js';
import { RawImage } from '../../src/format/raw.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isEvent, isStatus, equalBytes } from '../helpers/images.js';

const MiB = 1 << 20;

/** Wraps one method of an image. */
function hook<T extends ImageFormat>(image: T, method: string, wrap: (original: (...a: never[]) => Promise<unknown>, ...args: never[]) => Promise<unknown>): T {
  return new Proxy(image, {
    get(t, p, r) {
      const v = Reflect.get(t, p, r);
      if (p === method) return (...args: never[]) => wrap((v as (...a: never[]) => Promise<unknown>).bind(t), ...args);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder() {
  const saved: Checkpoint[] = [];
  return { saved, checkpointer: { save: async (c: Checkpoint) => void saved.push(structuredClone(c)), markSourceWriting: async () => {}, remove: async () => {} } };
}

async function resumeAndComplete(src: { image: ImageFormat }, dst: { image: ImageFormat }, bitmap: Uint8Array): Promise<void> {
  const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full' }, resume: { bitmap } });
  job.start();
  await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
  job.complete();
  expect((await job.result).outcome).toBe('completed');
}

describe('review regressions', () => {
  it('a soft cancel that arrives during the flush before READY cancels (it used to spin forever)', async () => {
    const src = memoryRaw(2 * MiB);
    let flushing!: () => void;
    const flushStarted = new Promise<void>((r) => (flushing = r));
    const target = hook(blankRaw(2 * MiB).image, 'flush', async (flush) => (flushing(), await delay(50), flush()));
    const job = await MirrorJob.create({ source: src.image, target, options: { sync: 'full' }, targetCreated: true });
    const rec = recordEvents(job);
    job.start();
    await flushStarted;
    job.blockJobCancel(false);
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).not.toContain('BLOCK_JOB_READY');
    expect(rec.names().slice(-4)).toEqual(['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  });

  it('no checkpoint is taken before the initial scan is complete (a pause during the scan, a failing scan)', async () => {
    const src = memoryRaw(4 * MiB, 3, false);
    // Block status in 64 KiB steps, slowly; the scan fails at 1 MiB when asked to.
    const scanning = (failAt: number) =>
      hook(src.image, 'blockStatus', async (status, ...args) => {
        const [offset, bytes] = args as unknown as [number, number];
        await delay(2);
        if (offset === failAt) throw new BlockError('EIO', 'read', offset, 0, 'metadata read failed');
        const s = (await (status as unknown as (o: number, b: number) => Promise<{ bytes: number }>)(offset, bytes)) as { bytes: number };
        return { ...s, bytes: Math.min(s.bytes, 64 * 1024) };
      });
    const failing = recorder();
    const job = await MirrorJob.create({ source: scanning(MiB), target: blankRaw(4 * MiB).image, options: { sync: 'full' }, targetCreated: true, checkpointer: failing.checkpointer });
    job.start();
    expect((await job.result).outcome).toBe('failed');
    expect(failing.saved).toEqual([]);

    const pausing = recorder();
    const dst = blankRaw(4 * MiB);
    const job2 = await MirrorJob.create({ source: scanning(-1), target: dst.image, options: { sync: 'full' }, targetCreated: true, checkpointer: pausing.checkpointer });
    job2.start();
    await delay(15);
    job2.pause();
    await waitForEvent(job2, isStatus('paused'));
    expect(pausing.saved).toEqual([]);
    job2.resume();
    await waitForEvent(job2, isEvent('BLOCK_JOB_READY'));
    // Every checkpoint after the scan resumes to an identical copy.
    await job2.checkpoint();
    job2.cancel();
    await job2.result;
    await resumeAndComplete(src, dst, pausing.saved.at(-1)!.bitmap);
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('write-blocking: a failed source write reaches the caller; the job goes on', async () => {
    const src = memoryRaw(2 * MiB);
    const dst = blankRaw(2 * MiB);
    const source = new FaultImage(src.image);
    const job = await MirrorJob.create({ source, target: dst.image, options: { sync: 'full', 'copy-mode': 'write-blocking' }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    source.faults.add({ op: 'write', errno: 'EIO', offset: 0, length: 8192, once: true });
    await expect(job.sourceWrite(4096, new Uint8Array(4096).fill(7))).rejects.toMatchObject({ code: 'EIO' });
    expect(job.status).toBe('ready');
    await job.sourceWrite(4096, new Uint8Array(4096).fill(8));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('background: a checkpoint taken while a source write is under way counts its chunks dirty', async () => {
    const src = memoryRaw(MiB, 1, false);
    const dst = blankRaw(MiB);
    const source = hook(src.image, 'write', async (write, ...args) => (await delay(100), write(...args)));
    const { saved, checkpointer } = recorder();
    const job = await MirrorJob.create({ source, target: dst.image, options: { sync: 'full' }, targetCreated: true, checkpointer });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    const write = job.sourceWrite(0, new Uint8Array(4096).fill(0xee));
    await delay(30); // the loop copies chunk 0's old bytes meanwhile
    expect(await job.checkpoint()).toBe(true);
    expect(saved.at(-1)!.bitmap[16]! & 1).toBe(1);
    await write;
    job.cancel();
    await job.result;
    await resumeAndComplete(src, dst, saved.at(-1)!.bitmap);
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('sync=top on a source without a backing file acts as full', async () => {
    const source = await createImage(new MemoryDevice(0), { format: 'qcow2', size: 2 * MiB });
    await source.write(0, new Uint8Array(65536).fill(1));
    const old = new MemoryDevice(new Uint8Array(2 * MiB).fill(0xaa)); // an existing target with other contents
    const job = await MirrorJob.create({ source, target: new RawImage(old), options: { sync: 'top' } });
    expect(job.options.sync).toBe('full');
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await job.result;
    const expected = new Uint8Array(2 * MiB);
    await source.read(0, expected);
    expect(equalBytes(old.bytes(), expected)).toBe(true);
  });

  for (const mode of ['background', 'write-blocking'] as const) {
    it(`${mode}: source writes under way when the job is cancelled land, and say so`, async () => {
      const src = memoryRaw(MiB, 1, false);
      const source = hook(src.image, 'write', async (write, ...args) => (await delay(60), write(...args)));
      const job = await MirrorJob.create({ source, target: blankRaw(MiB).image, options: { sync: 'full', 'copy-mode': mode }, targetCreated: true });
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
      const writes = [job.sourceWrite(0, new Uint8Array(4096).fill(1)), job.sourceWrite(0, new Uint8Array(4096).fill(2))];
      await delay(10);
      job.cancel();
      await job.result;
      const settled = await Promise.allSettled(writes);
      expect(settled[0]!.status).toBe('fulfilled');
      // The second either landed or was refused because the job had ended, never a kernel error.
      if (settled[1]!.status === 'rejected') expect((settled[1]!.reason as BlockError).code).toBe('EBUSY');
    });
  }

  it('checkpoint() after the job concluded stores nothing', async () => {
    const { saved, checkpointer } = recorder();
    const job = await MirrorJob.create({ source: memoryRaw(MiB).image, target: blankRaw(MiB).image, options: { sync: 'full', 'auto-dismiss': false }, targetCreated: true, checkpointer });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await waitForEvent(job, isStatus('concluded'));
    const before = saved.length;
    expect(await job.checkpoint()).toBe(false);
    expect(saved.length).toBe(before);
    expect(() => job.serializeBitmap()).toThrow(/concluded/);
    job.dismiss();
    await job.result;
  });

  it('the picture and checkpoints never grow kernel memory while the job runs', async () => {
    const kernel = await Kernel.create();
    const size = 2 ** 40; // 1 TiB at 64 KiB: 16M chunks
    const fake = { size, format: 'raw', readOnly: false, info: async () => ({ format: 'raw', virtualSize: size, fileSize: size }) } as unknown as ImageFormat;
    const job = await MirrorJob.create({ source: fake, target: { ...fake } as ImageFormat, options: { sync: 'full' }, kernel });
    const before = kernel.memory.buffer.byteLength;
    for (let i = 0; i < 3; i++) {
      job.picture(300);
      job.serializeBitmap();
    }
    expect(kernel.memory.buffer.byteLength).toBe(before);
  });

  it('a job cancelled before it starts concludes at once', async () => {
    const job = await MirrorJob.create({ source: memoryRaw(MiB).image, target: blankRaw(MiB).image, options: { sync: 'full' } });
    const rec = recordEvents(job);
    job.cancel();
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).toEqual(['created', 'aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  });
});

describe('a checkpoint and a source write', () => {
  it('a source write waits for a checkpoint under way: it never lands between the bitmap and the stamps', async () => {
    const src = memoryRaw(2 * MiB, 21);
    const dst = blankRaw(2 * MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let saving!: () => void;
    const saveStarted = new Promise<void>((r) => (saving = r));
    const job = await MirrorJob.create({
      source: src.image,
      target: dst.image,
      options: { sync: 'full' },
      targetCreated: true,
      checkpointer: {
        save: async () => {
          saving();
          await gate; // the stamps would be taken here
        },
        markSourceWriting: async () => {},
        remove: async () => {},
      },
    });
    job.start();
    await saveStarted;
    const before = src.device.bytes().slice(0, 4096);
    let landed = false;
    const write = job.sourceWrite(0, new Uint8Array(4096).fill(0xee)).then(() => (landed = true));
    await delay(30);
    expect(landed).toBe(false);
    expect(equalBytes(src.device.bytes().slice(0, 4096), before)).toBe(true);
    release();
    await write;
    expect(src.device.bytes()[0]).toBe(0xee);
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });
});

describe('ignore with one buffer', () => {
  for (const side of ['source', 'target'] as const) {
    it(`a ${side} error under ignore with --buf-size 1M does not stall the job: READY soon after`, async () => {
      const src = memoryRaw(8 * MiB, 31, false);
      const dst = blankRaw(8 * MiB);
      const source = new FaultImage(src.image);
      const target = new FaultImage(dst.image);
      (side === 'source' ? source : target).faults.add({ op: side === 'source' ? 'read' : 'write', errno: 'EIO', offset: MiB, length: 1, once: true });
      const job = await MirrorJob.create({
        source,
        target,
        options: { sync: 'full', 'buf-size': MiB, [side === 'source' ? 'on-source-error' : 'on-target-error']: 'ignore' },
        targetCreated: true,
      });
      const rec = recordEvents(job);
      const started = Date.now();
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'), 5000);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(rec.names()).toContain(`ERROR:${side === 'source' ? 'read' : 'write'}:ignore`);
      job.complete();
      expect((await job.result).outcome).toBe('completed');
      expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
    });
  }
});

describe('a complete overtaken by a cancel', () => {
  it('job-complete in standby, then job-resume and job-cancel back to back: the job completes and the cancel finds no job, as in QEMU', async () => {
    const src = memoryRaw(2 * MiB, 41);
    const dst = blankRaw(2 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', id: 'mirror' }, targetCreated: true });
    const control = new MirrorControl();
    control.add(job);
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    await control.execute('job-pause', { id: 'mirror' });
    await waitForEvent(job, isStatus('standby'));
    await control.execute('job-complete', { id: 'mirror' });
    const answers = await Promise.allSettled([control.execute('job-resume', { id: 'mirror' }), control.execute('job-cancel', { id: 'mirror' })]);
    expect(answers[0]).toMatchObject({ status: 'fulfilled' });
    expect(answers[1]).toMatchObject({ status: 'rejected', reason: { message: 'Job not found' } });
    expect((await job.result).outcome).toBe('completed');
    expect(rec.names()).toContain('BLOCK_JOB_COMPLETED');
    expect(rec.names()).not.toContain('BLOCK_JOB_CANCELLED');
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('a cancel while the completion still has data to copy is a cancel, as in QEMU', async () => {
    const src = memoryRaw(2 * MiB, 42);
    const dst = blankRaw(2 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', id: 'mirror' }, targetCreated: true });
    const control = new MirrorControl();
    control.add(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    await control.execute('job-pause', { id: 'mirror' });
    await waitForEvent(job, isStatus('standby'));
    await job.sourceWrite(0, new Uint8Array(65536).fill(7));
    await control.execute('job-complete', { id: 'mirror' });
    await control.execute('job-cancel', { id: 'mirror' });
    expect((await job.result).outcome).toBe('cancelled');
  });
});

describe('the speed limit, as QEMU pays it', () => {
  it('8 MiB at 8 MiB/s: paid for before READY (1 s, not one buffer early); not busy while it sleeps for the limit', async () => {
    const src = memoryRaw(8 * MiB, 51, false);
    const dst = blankRaw(8 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', speed: 8 * MiB }, targetCreated: true });
    const started = Date.now();
    job.start();
    await delay(300);
    const during = job.query();
    expect(during.status).toBe('running');
    expect(during.busy).toBe(false);
    // Dispatched as the limit allows, a slice's worth at a time.
    expect(during.offset).toBeLessThan(8 * MiB);
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'), 5000);
    const readyAfter = Date.now() - started;
    expect(readyAfter).toBeGreaterThanOrEqual(990);
    expect(readyAfter).toBeLessThan(2500);
    job.complete();
    expect((await job.result).outcome).toBe('completed');
  });
});

describe('a concluded job', () => {
  it('keeps its len: a job that failed under report still counts what it left dirty (as QEMU, not a full bar)', async () => {
    const src = memoryRaw(4 * MiB, 4, false);
    const source = new FaultImage(src.image);
    source.faults.add({ op: 'read', errno: 'EIO', offset: 2 * MiB, length: 1, once: false });
    const job = await MirrorJob.create({
      source,
      target: blankRaw(4 * MiB).image,
      targetCreated: true,
      options: { sync: 'full', 'buf-size': MiB, 'auto-dismiss': false },
    });
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isStatus('concluded'));
    const completed = rec.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED')!;
    const info = job.query();
    expect(info.status).toBe('concluded');
    expect(info.offset).toBeLessThan(info.len);
    expect({ len: info.len, offset: info.offset }).toEqual({ len: (completed.data as { len: number }).len, offset: (completed.data as { offset: number }).offset });
    // Its numbers say the same: what it left dirty is not counted as zero once its bitmap is freed.
    expect(job.stats().dirtyBytes).toBe(info.len - info.offset);
    expect(job.stats().dirtyBytes).toBeGreaterThan(0);
    job.dismiss();
  });
});

describe('a soft cancel after READY (found by the job property test)', () => {
  it('makes a later complete refused, as QEMU (job_complete refuses a job with a cancel requested): the job finishes without switching over', async () => {
    const src = memoryRaw(MiB, 9);
    const dst = blankRaw(MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, targetCreated: true, options: { sync: 'full', 'auto-finalize': false } });
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.blockJobCancel(false);
    expect(() => job.complete()).toThrow(`The active block job '${job.id}' cannot be completed`);
    await waitForEvent(job, isStatus('pending'));
    job.finalize();
    expect((await job.result).outcome).toBe('completed');
    expect(rec.names().filter((n) => n.startsWith('BLOCK_JOB_'))).toEqual(['BLOCK_JOB_READY', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_COMPLETED']);
  });
});

describe('a checkpoint follows a source write even while nothing copies (found by the soak)', () => {
  it('a job paused by a person checkpoints the chunks a guest wrote within the interval, so a resume after a kill is possible', async () => {
    const src = memoryRaw(4 * MiB, 11);
    const { saved, checkpointer } = recorder();
    const job = await MirrorJob.create({
      source: src.image,
      target: blankRaw(4 * MiB).image,
      options: { sync: 'full', speed: MiB },
      targetCreated: true,
      checkpointer,
      checkpointIntervalSeconds: 0.2,
    });
    job.start();
    await delay(100);
    job.pause();
    await waitForEvent(job, isStatus('paused'));
    await delay(50);
    const before = saved.length;
    const wroteAt = Date.now();
    await job.sourceWrite(3 * MiB, new Uint8Array(4096).fill(7));
    await delay(450);
    expect(saved.length, 'a checkpoint after the write, though the job is paused').toBeGreaterThan(before);
    const last = saved.at(-1)!;
    expect(last.savedAt).toBeGreaterThanOrEqual(wroteAt);
    const back = (await Kernel.create()).newBitmap(Math.ceil((4 * MiB) / job.granularity));
    back.deserialize(last.bitmap);
    expect(back.get(Math.floor((3 * MiB) / job.granularity)), 'the written chunk is dirty in it').toBe(true);
    job.cancel();
    await job.result;
  });
});
