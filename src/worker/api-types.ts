/**
 * What crosses between the page and the worker besides the calls
 * themselves (`WorkerApi`, in worker.ts): what the page asks for, what the
 * worker pushes to it (events, progress that carries the bitmap's picture,
 * the moment a job let go of its images), and what it lists. The page
 * imports these as types only.
 */
import type { FormatName } from '../format/image-format.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import type { MirrorOptions } from '../mirror/options.js';
import type { BlockJobInfo, CellState, JobStats } from '../mirror/types.js';
import type { SourceRef } from '../shared/source-ref.js';
import type { GuestStats } from './guest.js';

export type { SourceRef } from '../shared/source-ref.js';
export type { ImageEntry } from './image-store.js';
export type { GuestStats } from './guest.js';

export interface StartMirrorRequest {
  source: SourceRef;
  target: string;
  /** Format of a target the job creates; default: the source's. An existing target keeps its own. */
  targetFormat?: FormatName;
  options: MirrorOptions;
}

/** What the page shows for a job besides QEMU's fields. */
export interface JobProgress {
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
  source: string;
  target: string;
  status: string;
  savedAt: number;
  dirtyBytes: number;
  size: number;
  /** Why it cannot be resumed here, if it cannot. */
  problem?: string;
}

export type EventSink = (event: AnyQmpEvent) => void;
export type ProgressSink = (progress: JobProgress) => void;
/** A job let go of its images and its checkpoint is final (sealed, or removed). */
export type ReleasedSink = (id: string) => void;
