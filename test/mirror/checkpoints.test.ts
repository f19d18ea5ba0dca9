/**
 * When a job checkpoints and what a checkpoint holds: none before the initial
 * scan is complete, none after the job concluded, a source write under way
 * counted dirty, a source write held while a checkpoint is stored, and a
 * checkpoint after a source write even while nothing copies.
 * (checkpoint-promise.test.ts pins the source flush a checkpoint needs;
 * crash-points.test.ts the promise itself after a crash at every point.)
 */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { BlockError } from '../../src/block/block-device.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { memoryRaw, blankRaw, waitForEvent, isEvent, isStatus, equalBytes } from '../helpers/images.js';
import { delay, hook } from '../helpers/hook.js';

const MiB = 1 << 20;


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

describe('when a job checkpoints', () => {
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
});

describe('a checkpoint and a source write', () => {
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

// Found by the soak (npm run soak).
describe('a checkpoint follows a source write even while nothing copies', () => {
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
