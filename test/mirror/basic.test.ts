import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { createImage } from '../../src/format/open.js';
import { RawImage } from '../../src/format/raw.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isStatus, isEvent, equalBytes } from '../helpers/images.js';

const MiB = 1 << 20;

describe('mirror, raw to raw', () => {
  it('full sync reaches READY, completes, and the images are equal', async () => {
    const src = memoryRaw(8 * MiB + 12345);
    const dst = blankRaw(8 * MiB + 12345);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', id: 'job0' }, targetCreated: true });
    const rec = recordEvents(job);
    const progress: string[] = [];
    job.onProgress((p) => progress.push(p.status));
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    const info = job.query();
    expect(info).toMatchObject({ device: 'job0', type: 'mirror', ready: true, status: 'ready', 'io-status': 'ok' });
    expect(info.offset).toBe(info.len);
    job.complete();
    const result = await job.result;
    expect(result.outcome).toBe('completed');
    expect(rec.names()).toEqual(['created', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
    // Progress keeps reporting to the end, after the job released its memory.
    expect(progress.at(-1)).toBe('null');
    expect(job.stats().dirtyBytes).toBe(0);
  });

  it('progress: offset only grows, and len stays the image size (its last chunk counted whole while dirty, as QEMU) when nothing writes the source', async () => {
    const size = 6 * MiB + 4096;
    const src = memoryRaw(size);
    const job = await MirrorJob.create({ source: src.image, target: blankRaw(size).image, options: { sync: 'full', speed: 24 * MiB, 'buf-size': 4 * MiB } });
    const seen: { offset: number; len: number }[] = [];
    job.onProgress((p) => seen.push({ offset: p.offset, len: p.len }));
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await job.result;
    expect(seen.length).toBeGreaterThan(5);
    const wholeChunks = Math.ceil(size / job.granularity) * job.granularity;
    for (let i = 0; i < seen.length; i++) {
      expect(seen[i]!.len).toBeLessThanOrEqual(wholeChunks);
      expect(seen[i]!.offset).toBeLessThanOrEqual(seen[i]!.len || size);
      if (i > 0) expect(seen[i]!.offset).toBeGreaterThanOrEqual(seen[i - 1]!.offset);
    }
    expect(seen.at(-1)).toEqual({ offset: size, len: size });
  });

  it('pause freezes progress, resume continues', async () => {
    const src = memoryRaw(16 * MiB);
    const dst = blankRaw(16 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', speed: 8 * MiB }, targetCreated: true });
    job.start();
    job.pause();
    await waitForEvent(job, isStatus('paused'));
    const frozen = job.query().offset;
    await new Promise((r) => setTimeout(r, 150));
    expect(job.query().offset).toBe(frozen);
    expect(job.query().paused).toBe(true);
    expect(() => job.pause()).toThrow('Job is already paused');
    job.setSpeed(0);
    job.resume();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await job.result;
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('cancel before READY gives CANCELLED', async () => {
    const src = memoryRaw(16 * MiB);
    const dst = blankRaw(16 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', speed: 4 * MiB }, targetCreated: true });
    const rec = recordEvents(job);
    job.start();
    await new Promise((r) => setTimeout(r, 50));
    job.cancel();
    const result = await job.result;
    expect(result.outcome).toBe('cancelled');
    expect(rec.names().slice(-4)).toEqual(['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
    expect(() => job.complete()).toThrow(/in state 'null' cannot accept command verb 'complete'/);
  });

  it('refuses complete before READY, and a size mismatch at creation', async () => {
    const src = memoryRaw(4 * MiB);
    await expect(MirrorJob.create({ source: src.image, target: blankRaw(4 * MiB + 512).image, options: { sync: 'full' } })).rejects.toThrow(/different sizes/);
    const job = await MirrorJob.create({ source: src.image, target: blankRaw(4 * MiB).image, options: { sync: 'full', speed: MiB } });
    job.start();
    expect(() => job.complete()).toThrow(/in state 'running' cannot accept command verb 'complete'/);
    job.cancel();
    await job.result;
  });
});

describe('limits', () => {
  it('at most 16 operations in flight, and more than one at once', async () => {
    const { MirrorJob } = await import('../../src/mirror/mirror-job.js');
    const { withJitter } = await import('../helpers/images.js');
    const size = 40 * MiB;
    const src = memoryRaw(size, 2, false);
    let inFlight = 0;
    let most = 0;
    const counting = new Proxy(withJitter(src.image, 5, 4), {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (prop !== 'read') return typeof v === 'function' ? v.bind(target) : v;
        return async (offset: number, into: Uint8Array) => {
          inFlight++;
          most = Math.max(most, inFlight);
          try {
            return await (v as (o: number, i: Uint8Array) => Promise<void>).call(target, offset, into);
          } finally {
            inFlight--;
          }
        };
      },
    });
    // buf-size 64 MiB: 4 MiB ops, 16 buffers; jitter keeps several reads pending at once.
    const job = await MirrorJob.create({ source: counting, target: blankRaw(size).image, options: { sync: 'full', 'buf-size': 64 * MiB }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await job.result;
    expect(most).toBeLessThanOrEqual(16);
    expect(most).toBeGreaterThan(4);
  });

  it('a speed limit holds the copy back (a lower bound only: slow machines are never too fast)', async () => {
    const size = 3 * MiB;
    const job = await MirrorJob.create({ source: memoryRaw(size, 3, false).image, target: blankRaw(size).image, options: { sync: 'full', speed: 6 * MiB } });
    const start = performance.now();
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    // 3 MiB at 6 MiB/s: 0.5 s, less one op (1 MiB) that may go in the first slice.
    expect(performance.now() - start).toBeGreaterThanOrEqual(300);
    job.complete();
    await job.result;
  });
});

describe('the picture', () => {
  it('shows zero cells for holes, clean for data, and dirty before the copy', async () => {
    const { MirrorJob } = await import('../../src/mirror/mirror-job.js');
    const size = 64 * 65536;
    const src = memoryRaw(size, 4, false);
    // Cells of one chunk each: chunks 10..19 are zeroes.
    await src.image.write(10 * 65536, new Uint8Array(10 * 65536));
    // Reads wait at a gate, so the picture can be taken before anything is copied.
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const gated = new Proxy(src.image, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (prop === 'read') return async (o: number, into: Uint8Array) => (await gate, target.read(o, into));
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const job = await MirrorJob.create({ source: gated, target: blankRaw(size).image, options: { sync: 'full', 'buf-size': 256 * 1024 }, targetCreated: true });
    job.start();
    await new Promise((r) => setTimeout(r, 20));
    const before = job.picture(64);
    expect(before.filter((c) => c === 'inflight').length).toBeGreaterThan(0);
    expect(before.filter((c) => c === 'dirty').length).toBeGreaterThan(0);
    expect(before.filter((c) => c === 'clean' || c === 'zero')).toHaveLength(0);
    open();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    const after = job.picture(64);
    expect(after.slice(10, 20)).toEqual(Array(10).fill('zero'));
    expect(after.filter((c) => c === 'clean')).toHaveLength(54);
    expect(job.picture(8)).toHaveLength(8);
    job.complete();
    await job.result;
  });

  it('shows a chunk a guest dirtied even when the job copied it again before the picture was taken', async () => {
    const size = 64 * 65536;
    const job = await MirrorJob.create({ source: memoryRaw(size, 4, false).image, target: blankRaw(size).image, options: { sync: 'full' }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    expect(job.picture(64).filter((c) => c === 'dirty')).toHaveLength(0);
    await job.sourceWrite(5 * 65536, new Uint8Array(4096).fill(7));
    // Copied at once (nothing holds the job back): the bitmap is clean again, but the write shows once.
    await new Promise((r) => setTimeout(r, 50));
    expect(job.stats().dirtyBytes).toBe(0);
    const picture = job.picture(64);
    expect(picture[5]).toBe('dirty');
    expect(picture.filter((c) => c === 'dirty')).toHaveLength(1);
    expect(job.picture(64)[5]).not.toBe('dirty');
    job.complete();
    await job.result;
  });
});

describe('sync modes', () => {
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

describe('what the job counts', () => {
  it('bytesZero: of the bytes done, those done as zeroes (chunks read and found zero); the rest is the data copied', async () => {
    const size = 8 * MiB;
    const src = memoryRaw(size);
    const job = await MirrorJob.create({ source: src.image, target: blankRaw(size).image, options: { sync: 'full' }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    await job.result;
    const g = job.granularity;
    const bytes = src.device.bytes();
    let zeroChunks = 0;
    for (let off = 0; off < size; off += g) if (bytes.subarray(off, off + g).every((b) => b === 0)) zeroChunks++;
    expect(zeroChunks).toBeGreaterThan(0);
    const stats = job.stats();
    expect(stats.bytesDone).toBe(size);
    expect(stats.bytesZero).toBe(zeroChunks * g);
    expect(stats.bytesDone - stats.bytesZero).toBe(size - zeroChunks * g);
  });
});

describe('progress', () => {
  it('a progress held back by the 100 ms interval still goes: a rate-limited job shows its first op at once, not at its next op seconds later', async () => {
    const size = 8 * MiB;
    const src = memoryRaw(size, 1, false);
    const job = await MirrorJob.create({ source: src.image, target: blankRaw(size).image, options: { sync: 'full', speed: 256 * 1024 }, targetCreated: true });
    const offsets: number[] = [];
    job.onProgress((p) => offsets.push(p.offset));
    job.start();
    await new Promise((r) => setTimeout(r, 600));
    // The first op (let through at once) has settled; its next is seconds away.
    expect(Math.max(...offsets)).toBeGreaterThan(0);
    job.cancel();
    await job.result;
  });
});
