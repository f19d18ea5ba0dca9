/**
 * A job's checkpoints, and the promise each one makes: a chunk it calls
 * clean holds on the target what the source will hold after any crash from
 * then on.
 *
 * - The target is flushed before the bitmap taken earlier is stored, so a
 *   chunk called clean is durable there.
 * - The source, when a guest wrote it through the job, is flushed too (a
 *   qcow2's cached L2 and refcount updates written and synced) before a
 *   checkpoint calls clean what those writes touched. A write counts from
 *   its start to its landing: one still under way when a bitmap is taken
 *   is dirty in that checkpoint and makes the next one flush the source.
 * - Before the first source write after a stored checkpoint, that
 *   checkpoint is marked, durably, as no longer resumable
 *   (`markSourceWriting`): a crash may lose an unflushed write, or keep
 *   half of it, without changing anything a stamp sees (a power loss can
 *   take the file's modification time with it). The next checkpoint,
 *   which flushes the source, is a clean one again.
 *
 * One save or mark runs at a time; source writes wait for both
 * (source-writes.ts), so none lands between a bitmap and what the
 * checkpointer stamps, and none starts before its mark is stored.
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
  /** A source write started or landed since the source was last flushed for a checkpoint: flush it again. */
  private sourceWritten = false;
  /** A stored checkpoint (this job's, or the one it resumed from) does not yet say that the source is being written. */
  private unmarked: boolean;
  private marking: Promise<void> | null = null;
  /** A checkpoint asked for after a source write, in case nothing copies meanwhile. */
  private afterWrite: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly checkpointer: Checkpointer | undefined,
    private readonly intervalMs: number,
    private readonly now: () => number,
    private readonly job: CheckpointedJob,
    /** The job resumes from a stored checkpoint. */
    resumed: boolean,
    private readonly id: string,
  ) {
    this.unmarked = resumed && checkpointer !== undefined;
  }

  get enabled(): boolean {
    return this.checkpointer !== undefined;
  }

  /** The save under way, if any. */
  get pending(): Promise<boolean> | null {
    return this.saving;
  }

  /** A mark under way, or null. */
  get markPending(): Promise<void> | null {
    return this.marking;
  }

  /** A source write may start without a mark first (none is stored, or it is marked already). */
  get writesMarked(): boolean {
    return !this.unmarked;
  }

  /**
   * Marks the stored checkpoint as being written after (see above). A mark
   * that cannot be stored is given up until the next checkpoint: the
   * stamps still refuse a source that changed as a kill leaves it.
   */
  markWrites(): Promise<void> {
    if (this.marking) return this.marking;
    const checkpointer = this.checkpointer;
    if (!this.unmarked || !checkpointer) return Promise.resolve();
    const run = async () => {
      try {
        if (this.saving) await this.saving;
        if (!this.unmarked) return;
        await checkpointer.markSourceWriting(this.id);
      } catch {
        // Not stored: see above.
      } finally {
        this.unmarked = false;
        this.marking = null;
      }
    };
    this.marking = run();
    return this.marking;
  }

  /**
   * A guest started or finished a write to the source. A job that copies checkpoints as it goes; one
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
        if (this.marking) await this.marking;
        if (flushSource) await this.job.flushSource();
        if (options.flush) await (options.quiet ? this.job.flushTargetQuietly() : this.job.flushTarget());
        await checkpointer.save({ ...state, savedAt: this.now() });
        this.unmarked = true;
        return true;
      } catch {
        // A checkpoint that cannot be written is skipped; the next one tries again. It may have been stored
        // all the same (a sync after the rename failed): the next write marks whatever is there.
        if (flushSource) this.sourceWritten = true;
        this.unmarked = this.unmarked || this.checkpointer !== undefined;
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
    await this.marking;
    this.unmarked = false;
    await this.checkpointer.remove(id).catch(() => {});
  }
}
