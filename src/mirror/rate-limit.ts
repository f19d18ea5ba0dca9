/**
 * Rate limiting in 100 ms slices, as QEMU's util/throttle ratelimit: each
 * slice may dispatch speed/10 bytes; an operation that finds the slice spent
 * waits for the next one. A large operation may overshoot a slice; the
 * overshoot is carried into the following slices, so the average holds.
 */
export const SLICE_MS = 100;

export class RateLimit {
  private sliceStart = 0;
  private dispatched = 0;

  constructor(private bytesPerSecond = 0) {}

  get speed(): number {
    return this.bytesPerSecond;
  }

  setSpeed(bytesPerSecond: number): void {
    this.bytesPerSecond = bytesPerSecond;
  }

  /**
   * Milliseconds to wait before dispatching `bytes` now; 0 means go, and
   * the bytes are counted. A positive answer counts nothing: ask again then.
   */
  delay(bytes: number, nowMs: number): number {
    if (this.bytesPerSecond <= 0) return 0;
    const quota = (this.bytesPerSecond * SLICE_MS) / 1000;
    if (nowMs >= this.sliceStart + SLICE_MS) {
      // Start a new slice, paying back what earlier slices overshot.
      const elapsedSlices = Math.floor((nowMs - this.sliceStart) / SLICE_MS);
      this.dispatched = Math.max(0, this.dispatched - elapsedSlices * quota);
      this.sliceStart = nowMs;
    }
    if (this.dispatched < quota) {
      this.dispatched += bytes;
      return 0;
    }
    return Math.max(1, this.sliceStart + SLICE_MS - nowMs);
  }
}
