/**
 * What crosses between the page and the worker besides the calls
 * themselves (`WorkerApi`, in worker.ts): what the page asks for, what the
 * worker pushes to it (events, progress that carries the bitmap's picture,
 * the moment a job let go of its images), and what it lists. The page
 * imports these as types only.
 */
import type { FormatName } from '../format/image-format.js';
import type { AnyQmpEvent } from '../qapi/events.js';
import type { ErrorPolicy } from '../mirror/error-policy.js';
import type { MirrorOptions } from '../mirror/options.js';
import type { BlockJobInfo, CellState, JobOutcome, JobStats } from '../mirror/types.js';
import type { SourceRef } from '../shared/source-ref.js';
import type { GuestStats } from './guest.js';
import type { ImageEntry } from './image-store.js';

export type { SourceRef } from '../shared/source-ref.js';
export type { ImageEntry } from './image-store.js';
export type { GuestStats } from './guest.js';
export type { NbdExportInfo } from './nbd.js';

/**
 * A mirror runs until a person completes or cancels it; an import is a
 * copy into a new image that completes by itself once everything is copied.
 */
export type JobKind = 'mirror' | 'import';

/** An import's own settings: nothing comes from the mirror form. */
export interface ImportOptions {
  /** Default: ignore (retry with backoff) for a URL, report for a file. */
  'on-source-error'?: ErrorPolicy;
  /** Default: report. */
  'on-target-error'?: ErrorPolicy;
  /** Bytes per second; default 0 (no limit). */
  speed?: number;
}

export interface StartMirrorRequest {
  source: SourceRef;
  target: string;
  /** Format of a target the job creates; default: the source's. An existing target keeps its own. */
  targetFormat?: FormatName;
  options: MirrorOptions;
  /** Fault rules armed before the start (SIDE:OP:ERRNO:RANGE[:once], as --inject): they apply from the job's first request. */
  faults?: string[];
  /** A guest writing to the source from the start, in bytes per second. */
  guest?: number;
}

/** What the page shows for a job besides QEMU's fields. */
export interface JobProgress {
  kind: JobKind;
  info: BlockJobInfo;
  stats: JobStats;
  source: string;
  target: string;
  guest: GuestStats | null;
  /**
   * The bitmap's picture, in as many cells as the page asked for (see
   * `subscribe` and `setPictureCells`); empty when it asked for none, or
   * once the job has let go of its bitmap.
   */
  cells: CellState[];
}

export interface InterruptedJob {
  id: string;
  kind: JobKind;
  source: string;
  target: string;
  status: string;
  savedAt: number;
  dirtyBytes: number;
  size: number;
  /** Why it cannot be resumed here, if it cannot. */
  problem?: string;
  /** Its source is a picked file that this page no longer holds: pick this file again to resume. */
  pickFile?: string;
  /** An import from a URL: the page resumes it by itself. */
  resumesItself?: boolean;
}

/** What the page learns once a job that ended has let go of its images. */
export interface JobRelease {
  id: string;
  kind: JobKind;
  outcome: JobOutcome;
  source: string;
  target: string;
  /** The target as the image list shows it now; null when it is gone (a target the job made and never wrote is dropped). */
  targetImage: ImageEntry | null;
  /** Its checkpoint is kept: a retry resumes where it stopped. */
  resumable: boolean;
}

export type EventSink = (event: AnyQmpEvent) => void;
export type ProgressSink = (progress: JobProgress) => void;
/** A job let go of its images and its checkpoint is final (sealed, or removed). */
export type ReleasedSink = (release: JobRelease) => void;
