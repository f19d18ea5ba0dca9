/**
 * Retries under `ignore`: QEMU retries a failed range at once, on every
 * iteration; diskmirror lets it wait a little longer each time (10 ms
 * doubling up to 1 s) before the range is issued again. The range stays
 * dirty all along: it is never lost, only held back (the backing-off
 * bitmap). Flushes that fail back off by the same count, under their own key.
 */
import type { DirtyBitmap } from '../kernel/kernel.js';

const FIRST_MS = 10;
const MAX_MS = 1000;

/** The key a failed target flush backs off under (chunk indices are never negative). */
export const FLUSH_KEY = -1;

interface Waiting {
  firstChunk: number;
  nbChunks: number;
  until: number;
}

export class Backoff {
  private readonly waiting: Waiting[] = [];
  private readonly attempts = new Map<number, number>();

  constructor(
    /** None when no policy ignores: a range that fails anyway is retried at once, as QEMU does. */
    private readonly backingOff: DirtyBitmap | null,
    private readonly now: () => number,
  ) {}

  /** The wait before the next attempt of what `key` names (a range's first chunk, or FLUSH_KEY). */
  delay(key: number): number {
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return Math.min(MAX_MS, FIRST_MS * 2 ** (n - 1));
  }

  /** It went through: the next failure starts from the first wait again. */
  forget(key: number): void {
    this.attempts.delete(key);
  }

  /** Holds a failed range back until its wait is over. */
  start(first: number, nb: number): void {
    const delay = this.delay(first);
    if (!this.backingOff) return;
    this.backingOff.set(first, nb);
    this.waiting.push({ firstChunk: first, nbChunks: nb, until: this.now() + delay });
  }

  /** Lets go of the ranges whose wait is over. */
  expire(): void {
    if (this.waiting.length === 0 || !this.backingOff) return;
    const now = this.now();
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const w = this.waiting[i]!;
      if (w.until <= now) {
        this.backingOff.reset(w.firstChunk, w.nbChunks);
        this.waiting.splice(i, 1);
      }
    }
    // Overlapping waits: keep the bits of those still waiting.
    for (const w of this.waiting) this.backingOff.set(w.firstChunk, w.nbChunks);
  }

  /** Milliseconds until the soonest wait is over; undefined when nothing waits. */
  nextExpiry(): number | undefined {
    if (this.waiting.length === 0) return undefined;
    const soonest = Math.min(...this.waiting.map((w) => w.until));
    return Math.max(1, soonest - this.now());
  }
}
