/**
 * Where a job's checkpoints are kept, one contract for both front ends:
 * IndexedDB in the browser (worker/checkpoint-store.ts), a sidecar file
 * beside the target under Node (cli/sidecar.ts). Each keeps one record per
 * job; what a record holds, how it is written and read back, and when it
 * may be written are the same in both, and are here.
 *
 * - A record names what it belongs to: a stamp of each image (see
 *   image-stamp.ts), so a resume onto a changed image is refused. Records
 *   of another version do not name their images: they are refused.
 * - Every write is durable before it resolves (the job goes on only then:
 *   see checkpoints.ts for the order of flushes before a save).
 * - While the job runs, a heartbeat is kept every HEARTBEAT_MS: after a
 *   closed tab or a kill it tells when the job's writes ended.
 * - `markSourceWriting` marks the stored record (the job's last, or the one
 *   it resumed from) as written after, keeping everything else.
 * - `seal`, once the job stopped writing (it failed, or was halted), marks
 *   the last record `final` with stamps taken of the closed images: they
 *   may then not have changed at all.
 * - `remove` wins over a save or a mark still under way: once removed, the
 *   record does not come back.
 * - A record read back is checked field by field: a damaged one is an error
 *   that says which field, never a crash.
 */
import { dirtyChunks } from '../kernel/bitmap-serial.js';
import type { FormatName } from '../format/image-format.js';
import type { ImageStamp } from '../format/image-stamp.js';
import { givenOptions, type ResolvedOptions, resolveOptions } from './options.js';
import type { Checkpoint, Checkpointer } from './types.js';

/** Records of another version cannot be resumed (they do not name their images). */
export const CHECKPOINT_VERSION = 2;
/** How often a running job's heartbeat is stored. */
export const HEARTBEAT_MS = 1000;

export interface CheckpointImages {
  /** The source's chain, the image first. */
  source: ImageStamp[];
  target: ImageStamp;
}

/**
 * What both stores keep of a checkpoint; each adds what only it needs (how
 * the source is named: a path, or the page's SourceRef).
 */
export interface CheckpointRecord<Source = unknown> {
  version: number;
  source: Source;
  target: string;
  targetFormat: FormatName;
  size: number;
  options: ResolvedOptions;
  status: string;
  savedAt: number;
  /** The serialized dirty bitmap (kernel/bitmap-serial.ts). */
  bitmap: Uint8Array;
  images: CheckpointImages;
  /** Sealed after the job's last write: the images are exactly as stamped. */
  final: boolean;
  /** A guest began writing the source after this checkpoint: it cannot be resumed (see checkpoints.ts). */
  sourceWriting?: boolean;
}

/** A record read back, and when the job's writes ended at the latest (its last heartbeat). */
export interface ReadCheckpoint<R extends CheckpointRecord> {
  record: R;
  writesEndedMs: number;
}

/** What every store keeps of a checkpoint, besides how it names the images. */
export function recordOf(checkpoint: Checkpoint, images: CheckpointImages): Omit<CheckpointRecord, 'source' | 'target' | 'targetFormat'> {
  const { size, options, status, savedAt, bitmap } = checkpoint;
  return { version: CHECKPOINT_VERSION, size, options, status, savedAt, bitmap, images, final: false };
}

/** The record the version that reads it wrote, naming its images; else it cannot be resumed. */
export function isCurrentVersion(c: { version?: unknown; images?: Partial<CheckpointImages> }): boolean {
  return c.version === CHECKPOINT_VERSION && Boolean(c.images?.target) && Array.isArray(c.images?.source);
}

/**
 * What is wrong with a record of this version, or null: every field a
 * resume reads has its type, its options are valid options. `sourceOk`
 * says whether its source is named as its store names sources.
 */
export function recordDamage(c: CheckpointRecord, sourceOk: (source: unknown) => boolean): string | null {
  const text = (v: unknown) => typeof v === 'string';
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const time = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!sourceOk(c.source) || !text(c.target)) return 'its image names';
  if (!count(c.size)) return 'its size';
  if (!time(c.savedAt)) return 'its time';
  if (!(c.bitmap instanceof Uint8Array)) return 'its bitmap';
  if (typeof c.final !== 'boolean') return 'its final mark';
  if (c.sourceWriting !== undefined && typeof c.sourceWriting !== 'boolean') return 'its mark of source writes';
  for (const stamp of [...c.images.source, c.images.target] as unknown[]) {
    const s = stamp as Partial<ImageStamp> | null;
    if (typeof s !== 'object' || s === null || !text(s.name) || !text(s.key) || !count(s.size) || !time(s.modifiedMs)) return 'its image stamps';
  }
  if (typeof c.options !== 'object' || c.options === null || Array.isArray(c.options)) return 'its options';
  try {
    resolveOptions(givenOptions(c.options), { targetIsZero: false });
  } catch (err) {
    return `its options: ${(err as Error).message}`;
  }
  return null;
}

/** One job's checkpoints in a store: what the job, its end and the contract test use. */
export interface CheckpointStore<R extends CheckpointRecord = CheckpointRecord> extends Checkpointer {
  /** Stores the job's state (its images stamped now), durably, with a heartbeat; the heartbeat then runs until stop(). */
  save(checkpoint: Checkpoint): Promise<void>;
  /** Marks the stored record as written after; nothing when there is none or it is marked already. */
  markSourceWriting(id: string): Promise<void>;
  /** Marks the last record this job saved final, with `images` stamped once closed; false when there is none (or it was removed). */
  seal(images: CheckpointImages): Promise<boolean>;
  /** Stops the heartbeat. */
  stop(): void;
  /** Removes the record: nothing this job does afterwards brings it back. */
  remove(id: string): Promise<void>;
  /** The record stored for this job, checked, or null; a damaged one, or one of another version, is an error naming what is wrong. */
  read(): Promise<ReadCheckpoint<R> | null>;
}

/**
 * The rules every store keeps, over a store's four ways to reach its one
 * record (`put` durably with a heartbeat, `read` checked, `erase`, `beat`).
 */
export abstract class StoredCheckpoints<R extends CheckpointRecord> implements CheckpointStore<R> {
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private last: R | null = null;
  /** The job is done with its checkpoint: a save still under way must not bring it back. */
  private removed = false;

  constructor(
    /** The images' stamps now (called after the job flushed them). */
    private readonly stamps: () => Promise<CheckpointImages>,
  ) {}

  /** The record this store keeps for `checkpoint`. */
  protected abstract record(checkpoint: Checkpoint, images: CheckpointImages): R;
  /** Replaces the stored record, durably, and stores a heartbeat with it. */
  protected abstract put(record: R): Promise<void>;
  /** Removes the stored record and its heartbeat. */
  protected abstract erase(): Promise<void>;
  /** Stores a heartbeat (now). */
  protected abstract beat(): Promise<void>;
  abstract read(): Promise<ReadCheckpoint<R> | null>;

  async save(checkpoint: Checkpoint): Promise<void> {
    const record = this.record(checkpoint, await this.stamps());
    if (!(await this.store(record))) return;
    this.heartbeat ??= setInterval(() => {
      if (!this.removed) void this.beat().catch(() => {});
    }, HEARTBEAT_MS);
    (this.heartbeat as { unref?: () => void }).unref?.();
  }

  async markSourceWriting(_id: string): Promise<void> {
    if (this.removed) return;
    const base = this.last ?? (await this.read())?.record;
    if (!base || base.sourceWriting) return;
    await this.store({ ...base, sourceWriting: true });
  }

  async seal(images: CheckpointImages): Promise<boolean> {
    this.stop();
    if (!this.last) return false;
    return this.store({ ...this.last, images, final: true });
  }

  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  async remove(_id: string): Promise<void> {
    this.removed = true;
    this.stop();
    await this.erase();
  }

  /** Stores `record` as the last one, unless removed (before or while it was written); true if it stays. */
  private async store(record: R): Promise<boolean> {
    if (this.removed) return false;
    await this.put(record);
    if (this.removed) {
      // Removed while it was being written: whichever landed last, it goes.
      await this.erase();
      return false;
    }
    this.last = record;
    return true;
  }
}

/** The dirty chunks' bytes of a serialized bitmap (a damaged one counts as all of it). */
export function dirtyBytesOf(serialized: Uint8Array, granularity: number, size: number): number {
  try {
    return Math.min(size, dirtyChunks(serialized) * granularity);
  } catch {
    return size;
  }
}
