import { describe, expect, it } from 'vitest';
import { RateLimit, SLICE_MS } from '../../src/mirror/rate-limit.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { blankRaw, isEvent, memoryRaw, waitForEvent } from '../helpers/images.js';
import { delay } from '../helpers/hook.js';

const MiB = 1 << 20;

/** Dispatches `opBytes` at a time, paying afterwards as the job does, on a simulated clock; ms until all is paid. */
function simulate(speed: number, opBytes: number, totalBytes: number, batch = 1): number {
  const rate = new RateLimit(speed);
  let now = 1000;
  let sent = 0;
  while (sent < totalBytes) {
    for (let i = 0; i < batch && sent < totalBytes; i++) {
      rate.account(opBytes, now);
      sent += opBytes;
    }
    for (let wait = rate.account(0, now); wait > 0; wait = rate.account(0, now)) now += wait;
  }
  return now - 1000;
}

describe('RateLimit', () => {
  it('0 means no limit', () => {
    expect(new RateLimit(0).account(1 << 30, 0)).toBe(0);
  });

  it('dispatch first, pay afterwards: 8 MiB at once at 2 MiB/s is paid for after 4 s, as QEMU', () => {
    const rate = new RateLimit(2 << 20);
    let wait = 0;
    for (let i = 0; i < 8; i++) wait = rate.account(1 << 20, 0);
    expect(wait).toBeCloseTo(4000, 6);
    expect(rate.account(0, 3999)).toBeCloseTo(1, 6);
    expect(rate.account(0, 4000)).toBe(0);
  });

  it('holds the average rate over many slices, for ops smaller and larger than a slice, one by one or in batches', () => {
    for (const [speed, op, batch] of [
      [1 << 20, 64 << 10, 1], // about 1.6 ops per 100 ms slice
      [10 << 20, 64 << 10, 1],
      [1 << 20, 1 << 20, 1], // each op is ten slices' worth
      [100 << 20, 1 << 20, 16],
      [2 << 20, 1 << 20, 8],
    ] as const) {
      const total = 20 * speed; // 20 seconds' worth
      const ms = simulate(speed, op, total, batch);
      const ideal = (total / speed) * 1000;
      expect(ms, `${speed} B/s, ops of ${op}, batches of ${batch}`).toBeGreaterThanOrEqual(ideal - SLICE_MS);
      expect(ms, `${speed} B/s, ops of ${op}, batches of ${batch}`).toBeLessThanOrEqual(ideal + SLICE_MS);
    }
  });

  it('a speed change applies to what is asked next', () => {
    const rate = new RateLimit(1000);
    expect(rate.account(500, 0)).toBeGreaterThan(0);
    rate.setSpeed(0);
    expect(rate.account(0, 1)).toBe(0);
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
