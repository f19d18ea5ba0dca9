/**
 * A target that loses what it acknowledged and did not flush (an NBD
 * server that restarts): everything the job wrote since the last flush
 * that succeeded is dirty again, the loss is a BLOCK_JOB_ERROR under
 * on-target-error, and the images still end up equal; a loss after a flush
 * that covered everything costs nothing; a qcow2 target, whose tables may be
 * gone with the data, fails the job.
 */
import { describe, expect, it } from 'vitest';
import type { EventData } from '../../src/qapi/events.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { ChunkMap } from '../../src/mirror/chunks.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { RawImage } from '../../src/format/raw.js';
import { createImage } from '../../src/format/open.js';
import { ForgetfulDevice } from '../helpers/forgetful-device.js';
import { equalBytes, isEvent, isStatus, memoryRaw, recordEvents, waitForEvent } from '../helpers/images.js';

const MiB = 1 << 20;

async function setup(policy: 'report' | 'ignore' | 'stop', restartAfterWrite: number) {
  const src = memoryRaw(4 * MiB, 9, false);
  const device = new ForgetfulDevice(4 * MiB);
  device.restartAfterWrite = restartAfterWrite;
  // Small operations: the restart comes with most of the copy still to do.
  const job = await MirrorJob.create({ source: src.image, target: new RawImage(device), options: { sync: 'full', id: 'm', 'on-target-error': policy, 'buf-size': 256 * 1024 } });
  const rec = recordEvents(job);
  const errors = () => rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').map((e) => e.data as EventData['BLOCK_JOB_ERROR']);
  return { src, device, job, rec, errors, equal: () => equalBytes(device.bytes(), src.device.bytes()) };
}

describe('a target that loses what it did not flush', () => {
  it('ignore: the chunks written before the loss are copied again, a write error says so, the images end equal', async () => {
    const { device, job, errors, equal } = await setup('ignore', 6);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(device.restarts).toBe(1);
    expect(errors()).toEqual([
      expect.objectContaining({ operation: 'write', action: 'ignore', errno: 'EIO', offset: 0, message: expect.stringMatching(/the server restarted: the \d+ chunks written there since then are dirty again/) }),
    ]);
    expect(equal()).toBe(true);
  });

  it('stop: the loss pauses the job; resumed, it copies them again and the images end equal', async () => {
    const { device, job, errors, equal } = await setup('stop', 6);
    job.start();
    await waitForEvent(job, isStatus('paused'));
    expect(errors()).toEqual([expect.objectContaining({ operation: 'write', action: 'stop', errno: 'EIO' })]);
    job.resume();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(device.restarts).toBe(1);
    expect(equal()).toBe(true);
  });

  it('report: the loss fails the job (EIO)', async () => {
    const { job, errors } = await setup('report', 6);
    job.start();
    expect(await job.result).toMatchObject({ outcome: 'failed', errno: 'EIO' });
    expect(errors()).toEqual([expect.objectContaining({ operation: 'write', action: 'report' })]);
  });

  it('a loss after READY (its flush covered every write) costs nothing: no error, nothing dirty, equal', async () => {
    const { device, job, errors, equal } = await setup('stop', Infinity);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    device.restart();
    expect(errors()).toEqual([]);
    expect(job.stats().dirtyChunks).toBe(0);
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(equal()).toBe(true);
  });

  it('a qcow2 target on such a device: the loss fails the job (its tables may be gone too), whatever the policy', async () => {
    const src = memoryRaw(4 * MiB, 9, false);
    const device = new ForgetfulDevice(8 * MiB);
    const target = await createImage(device, { format: 'qcow2', size: 4 * MiB });
    device.restartAfterWrite = device.writes + 6;
    const job = await MirrorJob.create({ source: src.image, target, options: { sync: 'full', id: 'm', 'on-target-error': 'ignore', 'buf-size': 256 * 1024 } });
    const rec = recordEvents(job);
    job.start();
    expect(await job.result).toMatchObject({ outcome: 'failed', errno: 'EIO' });
    expect(device.restarts).toBe(1);
    const errors = rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').map((e) => e.data);
    expect(errors).toEqual([expect.objectContaining({ operation: 'write', action: 'report', message: expect.stringMatching(/the server restarted; the target's format keeps tables that may be gone with them/) })]);
  });
});

describe('which chunks a loss makes dirty again', () => {
  it('a flush covers the writes done when it began; one under way when it began, or a failed flush, leaves them at risk', async () => {
    const kernel = await Kernel.create();
    const map = new ChunkMap(kernel, 64 * 4096, 4096, false, false, true);
    const dirtyAfterLoss = () => {
      const lost = map.durability('lost');
      const dirty: number[] = [];
      for (let c = map.dirty.nextDirty(0); c >= 0; c = c + 1 < map.nbChunks ? map.dirty.nextDirty(c + 1) : -1) dirty.push(c);
      map.dirty.clear();
      return { lost, dirty };
    };
    // A written and done, B issued, the flush begins and succeeds, B completes: only B is at risk.
    map.noteTargetWrite(1, 1);
    map.noteTargetWrite(5, 2);
    map.durability('flush-started');
    map.durability('flushed');
    map.noteTargetWrite(5, 2);
    expect(dirtyAfterLoss()).toEqual({ lost: { first: 5, nb: 2, count: 2 }, dirty: [5, 6] });
    // A failed flush covers nothing: both at risk, and what came after it.
    map.noteTargetWrite(1, 1);
    map.durability('flush-started');
    map.noteTargetWrite(9, 1);
    map.durability('flush-failed');
    expect(dirtyAfterLoss()).toEqual({ lost: { first: 1, nb: 9, count: 2 }, dirty: [1, 9] });
    // A loss while a flush is under way: what it covered is at risk too.
    map.noteTargetWrite(3, 1);
    map.durability('flush-started');
    map.noteTargetWrite(4, 1);
    expect(dirtyAfterLoss()).toEqual({ lost: { first: 3, nb: 2, count: 2 }, dirty: [3, 4] });
    // Nothing written since the last flush: nothing lost.
    map.noteTargetWrite(7, 1);
    map.durability('flush-started');
    map.durability('flushed');
    expect(dirtyAfterLoss()).toEqual({ lost: null, dirty: [] });
    map.free();
  });
});
