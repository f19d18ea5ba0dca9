/**
 * The book-keeping of a device that may lose writes it acknowledged (see
 * BlockDevice.watchDurability): it counts the writes acknowledged, follows
 * one flush at a time (a flush covers what was acknowledged when it began),
 * and on a loss tells its listeners, if anything acknowledged was not
 * flushed yet.
 */
import type { BlockError, DurabilityNotice } from './block-device.js';

export class DurabilityWatch {
  private readonly listeners = new Set<(notice: DurabilityNotice) => void>();
  /** Writes acknowledged, counted. */
  private acknowledged = 0;
  /** How many of them a flush made durable (or a loss already told of). */
  private durable = 0;
  /** The count the flush being followed covers; null when none is. */
  private following: number | null = null;

  watch(listener: (notice: DurabilityNotice) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A write was acknowledged: it is not durable until a flush begun after it succeeds. */
  acknowledgedWrite(): void {
    this.acknowledged++;
  }

  /** Runs a flush, followed unless another one is. */
  async flush(run: () => Promise<unknown>): Promise<void> {
    const followed = this.following === null;
    if (followed) {
      this.following = this.acknowledged;
      this.tell({ kind: 'flush-started' });
    }
    try {
      await run();
    } catch (err) {
      if (followed) {
        this.following = null;
        this.tell({ kind: 'flush-failed' });
      }
      throw err;
    }
    if (followed) {
      this.durable = Math.max(this.durable, this.following!);
      this.following = null;
      this.tell({ kind: 'flushed' });
    }
  }

  /** Acknowledged writes may be gone (`error` says why): told when some were not flushed; from then on they count as told. */
  lost(error: BlockError): void {
    if (this.acknowledged === this.durable) return;
    this.durable = this.acknowledged;
    this.tell({ kind: 'lost', error, recoverable: true });
  }

  private tell(notice: DurabilityNotice): void {
    for (const listener of [...this.listeners]) listener(notice);
  }
}
