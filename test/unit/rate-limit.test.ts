import { describe, expect, it } from 'vitest';
import { RateLimit, SLICE_MS } from '../../src/mirror/rate-limit.js';

/** Dispatches `bytes` per op as fast as the limiter allows, on a simulated clock. */
function simulate(speed: number, opBytes: number, totalBytes: number): number {
  const rate = new RateLimit(speed);
  let now = 1000;
  let sent = 0;
  while (sent < totalBytes) {
    const wait = rate.delay(opBytes, now);
    if (wait > 0) now += wait;
    else sent += opBytes;
  }
  return now - 1000;
}

describe('RateLimit', () => {
  it('0 means no limit', () => {
    expect(new RateLimit(0).delay(1 << 30, 0)).toBe(0);
  });

  it('holds the average rate over many slices, for ops smaller and larger than a slice', () => {
    for (const [speed, op] of [
      [1 << 20, 64 << 10], // about 1.6 ops per 100 ms slice
      [10 << 20, 64 << 10],
      [1 << 20, 1 << 20], // each op is ten slices' worth
      [100 << 20, 1 << 20],
    ] as const) {
      const total = 20 * speed; // 20 seconds' worth
      const ms = simulate(speed, op, total);
      // Within one op and one slice of the ideal.
      const ideal = (total / speed) * 1000;
      expect(ms, `${speed} B/s, ops of ${op}`).toBeGreaterThanOrEqual(ideal - (op / speed) * 1000 - SLICE_MS);
      expect(ms, `${speed} B/s, ops of ${op}`).toBeLessThanOrEqual(ideal + SLICE_MS);
    }
  });

  it('a speed change applies to the next op', () => {
    const rate = new RateLimit(1000);
    expect(rate.delay(500, 0)).toBe(0);
    expect(rate.delay(500, 1)).toBeGreaterThan(0);
    rate.setSpeed(0);
    expect(rate.delay(500, 2)).toBe(0);
  });
});
