/**
 * Rate limiting as QEMU's blockjob does it (util ratelimit with 100 ms
 * slices): work is dispatched first and paid for afterwards. `account`
 * counts what was just dispatched; once a slice's quota (speed / 10) is
 * spent, the slice stretches to cover what was dispatched, and the job
 * sleeps until it ends before dispatching more, and before it becomes
 * ready: a job at 2 MiB/s over 8 MiB reaches READY after 4 s, as QEMU's.
 * (QEMU dispatches a whole buffer's worth before it pays; diskmirror stops
 * dispatching once the quota is spent, so progress moves evenly.)
 */
export const SLICE_MS = 100;

export class RateLimit {
  private sliceStart = 0;
  private sliceEnd = 0;
  private dispatched = 0;

  constructor(private bytesPerSecond = 0) {}

  get speed(): number {
    return this.bytesPerSecond;
  }

  setSpeed(bytesPerSecond: number): void {
    this.bytesPerSecond = bytesPerSecond;
  }

  /**
   * Counts `bytes` dispatched at `nowMs` and returns how many milliseconds
   * to wait before dispatching more (0: go on). `account(0, now)` only asks.
   */
  account(bytes: number, nowMs: number): number {
    if (this.bytesPerSecond <= 0) return 0;
    const quota = Math.max(1, (this.bytesPerSecond * SLICE_MS) / 1000);
    if (this.sliceEnd < nowMs) {
      // The previous (possibly stretched) slice is over: start counting again.
      this.sliceStart = nowMs;
      this.sliceEnd = nowMs + SLICE_MS;
      this.dispatched = 0;
    }
    this.dispatched += bytes;
    if (this.dispatched < quota) return 0;
    // Over quota: the slice lasts as long as what was dispatched takes at this speed.
    this.sliceEnd = this.sliceStart + (this.dispatched / quota) * SLICE_MS;
    return Math.max(0, this.sliceEnd - nowMs);
  }

  /** Takes back bytes counted for work that turned out to cost nothing (zeroes, deallocations). */
  refund(bytes: number): void {
    this.dispatched = Math.max(0, this.dispatched - bytes);
  }
}
