/**
 * A job's checkpoints, in the order that makes them safe: flush the target
 * (and the source, if a guest wrote it), then store the bitmap taken before
 * the flush. A checkpoint therefore never calls clean a chunk whose data is
 * not durable on both sides. One save runs at a time; source writes wait
 * for it (mirror-job.ts), so none lands between the bitmap and what the
 * checkpointer stamps.
 */
import type { Checkpoint, Checkpointer } from './types.js';

/** What a checkpoint needs of its job. */
export interface CheckpointedJob {
  /** The bitmap describes the whole image now (the initial scan is done, the memory not yet freed). */
  canSave(): boolean;
  /** The state to store, the bitmap taken now. */
  snapshot(): Omit<Checkpoint, 'savedAt'>;
  flushSource(): Promise<void>;
  /** Flushes the target; a failure goes to the target's error policy there, then is thrown. */
  flushTarget(): Promise<void>;
  /** Flushes the target, a failure only thrown (a checkpoint of a job at rest is not one of its requests). */
  flushTargetQuietly(): Promise<void>;
}

export class Checkpoints {
  private lastSaved = 0;
  private saving: Promise<boolean> | null = null;
  /** A source write happened since the last checkpoint: flush the source too. */
  private sourceWritten = false;
  /** A checkpoint asked for after a source write, in case nothing copies meanwhile. */
  private afterWrite: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly checkpointer: Checkpointer | undefined,
    private readonly intervalMs: number,
    private readonly now: () => number,
    private readonly job: CheckpointedJob,
  ) {}

  get enabled(): boolean {
    return this.checkpointer !== undefined;
  }

  /** The save under way, if any. */
  get pending(): Promise<boolean> | null {
    return this.saving;
  }

  /**
   * A guest wrote the source. A job that copies checkpoints as it goes; one
   * at rest (paused by a person or by an error, or idle) copies nothing and
   * would keep a checkpoint older than the source, which a later resume
   * must refuse. So a checkpoint follows a write within the interval anyway.
   */
  sourceWrite(): void {
    this.sourceWritten = true;
    this.afterWriteSoon();
  }

  /** A checkpoint once the interval since the last one has passed, if a source write is still not in one. */
  private afterWriteSoon(): void {
    if (!this.checkpointer || this.afterWrite) return;
    const wait = Math.max(0, this.lastSaved + this.intervalMs - this.now());
    this.afterWrite = setTimeout(() => {
      this.afterWrite = null;
      if (!this.sourceWritten) return;
      if (this.saving || this.now() - this.lastSaved < this.intervalMs) this.afterWriteSoon();
      else void this.save({ flush: true, quiet: true });
    }, wait);
    (this.afterWrite as { unref?: () => void }).unref?.();
  }

  /** A periodic checkpoint, when the interval has passed. */
  maybe(): void {
    if (!this.checkpointer) return;
    const now = this.now();
    if (now - this.lastSaved < this.intervalMs) return;
    this.lastSaved = now;
    void this.save();
  }

  /** Stores a checkpoint (joining one under way); resolves with whether it was stored. */
  save(options: { flush: boolean; quiet?: boolean } = { flush: true }): Promise<boolean> {
    if (!this.checkpointer || !this.job.canSave()) return Promise.resolve(false);
    if (this.saving) return this.saving;
    this.lastSaved = this.now();
    const state = this.job.snapshot();
    const flushSource = this.sourceWritten;
    this.sourceWritten = false;
    const checkpointer = this.checkpointer;
    const run = async (): Promise<boolean> => {
      try {
        if (flushSource) await this.job.flushSource();
        if (options.flush) await (options.quiet ? this.job.flushTargetQuietly() : this.job.flushTarget());
        await checkpointer.save({ ...state, savedAt: this.now() });
        return true;
      } catch {
        // A checkpoint that cannot be written is skipped; the next one tries again.
        if (flushSource) this.sourceWritten = true;
        return false;
      } finally {
        this.saving = null;
      }
    };
    this.saving = run();
    return this.saving;
  }

  /** No more checkpoints after writes (the job has ended). */
  stop(): void {
    if (this.afterWrite) clearTimeout(this.afterWrite);
    this.afterWrite = null;
  }

  /** Stores a checkpoint now, after the one under way (for a clean interruption); false if none could be. */
  async saveNow(): Promise<boolean> {
    await this.saving;
    return this.save();
  }

  /** The job is done with its checkpoint: once a save under way has landed, so it cannot bring it back. */
  async remove(id: string): Promise<void> {
    if (!this.checkpointer) return;
    this.stop();
    await this.saving;
    await this.checkpointer.remove(id).catch(() => {});
  }
}
