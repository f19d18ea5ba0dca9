/**
 * What the world sees of a mirror job: its query-block-jobs fields, its
 * statistics and picture, its result, and what it needs to be built and to
 * checkpoint. The worker, the command line and the page import these.
 */
import type { Errno } from '../block/block-device.js';
import type { ImageFormat } from '../format/image-format.js';
import type { Kernel } from '../kernel/kernel.js';
import type { IoStatus } from './error-policy.js';
import type { JobStatus } from '../qapi/job-states.js';
import type { CopyMode, MirrorOptions, ResolvedOptions } from './options.js';

/** QEMU's query-block-jobs fields (the page's vocabulary too). */
export type { BlockJobInfo } from '../qapi/commands.js';

/** A range that failed and has not been copied since. */
export interface FailedRange {
  offset: number;
  bytes: number;
  side: 'source' | 'target';
  errno: Errno;
  attempts: number;
}

/** More than QEMU reports, for the app's picture and the CLI's progress line. */
export interface JobStats {
  granularity: number;
  nbChunks: number;
  dirtyChunks: number;
  dirtyBytes: number;
  inFlightOps: number;
  inFlightBytes: number;
  failed: FailedRange[];
  /** Bytes copied, zeroed or skipped as known-zero. */
  bytesDone: number;
  bytesRead: number;
  bytesWritten: number;
  /**
   * Of bytesDone, the bytes done as zeroes rather than as data: ranges the
   * source calls zero or unallocated (never read), and chunks read and found
   * all zero; each became a zero write, a deallocation, or nothing on a
   * target known to read zero there. bytesDone - bytesZero is the data copied.
   */
  bytesZero: number;
  /** background: guest writes only dirty the bitmap; write-blocking: each is copied as it is written, at the guest's pace (not limited by the speed). */
  copyMode: CopyMode;
}

export type JobOutcome = 'completed' | 'cancelled' | 'failed';

export interface JobResult {
  outcome: JobOutcome;
  error?: string;
  errno?: Errno;
}

/** How the picture sees one cell (a range of chunks). */
export type CellState = 'clean' | 'dirty' | 'inflight' | 'failed' | 'zero';

/** Restores a job's progress from a checkpoint: the chunks still dirty. */
export interface ResumeState {
  bitmap: Uint8Array;
}

export interface Checkpoint {
  id: string;
  options: ResolvedOptions;
  size: number;
  status: JobStatus;
  offset: number;
  bitmap: Uint8Array;
  savedAt: number;
}

export interface Checkpointer {
  save(checkpoint: Checkpoint): Promise<void>;
  /**
   * Says durably, in the checkpoint stored for job `id` (this job's last, or
   * the one it resumed from), that the source is being written after it: a
   * crash from now on may leave the source changed where no stamp can see
   * (a write lost, or half done), so that checkpoint can no longer be
   * resumed. Resolves once it is stored; the write waits for it.
   */
  markSourceWriting(id: string): Promise<void>;
  /** Called once the job reached null: the checkpoint is not needed anymore. */
  remove(id: string): Promise<void>;
}

export interface MirrorJobParams {
  source: ImageFormat;
  target: ImageFormat;
  options: MirrorOptions;
  /** The target was created by this job (so it reads as zeroes unless told otherwise). */
  targetCreated?: boolean;
  kernel?: Kernel;
  resume?: ResumeState;
  checkpointer?: Checkpointer;
  /** Seconds between periodic checkpoints (default 5). */
  checkpointIntervalSeconds?: number;
  now?: () => number;
}
