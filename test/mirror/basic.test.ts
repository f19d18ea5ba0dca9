import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
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

  it('progress: offset only grows, and len stays the image size when nothing writes the source', async () => {
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
    for (let i = 0; i < seen.length; i++) {
      expect(seen[i]!.len).toBeLessThanOrEqual(size);
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
