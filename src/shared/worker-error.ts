/**
 * The worker's own refusals: about its jobs, checkpoints and picked files,
 * not about an image's bytes (those are BlockError, FormatError, LockError
 * and ImageConflictError, from the layers below). Each carries a code, so
 * the page tells them apart without reading the words; error-transfer.ts
 * keeps the class and the code across the worker boundary.
 */
import { CommandError } from '../qapi/errors.js';

export type WorkerErrorCode =
  /** No job of that id runs in this worker. */
  | 'no-such-job'
  /** A job of that id runs already, or an interrupted one has it. */
  | 'job-exists'
  /** The job runs (here or in another tab): it cannot be resumed or discarded. */
  | 'job-running'
  /** No checkpoint of that id is stored. */
  | 'no-checkpoint'
  /** A resume's target image is gone. */
  | 'target-gone'
  /** A picked file is no longer held (the page was reloaded): pick it again. */
  | 'picked-file-gone'
  /** This browser has no Origin Private File System. */
  | 'no-opfs'
  /** A URL could not be fetched at all: no server, or no CORS headers (a page cannot tell which). */
  | 'url-unreachable'
  /** The server of a URL does not answer Range requests. */
  | 'url-no-range'
  /** A picked file is not the one the job reads. */
  | 'wrong-file'
  /** An NBD export's address is not a WebSocket URL the page can use. */
  | 'nbd-bad-address'
  /** Nothing answered at an NBD bridge's WebSocket URL. */
  | 'nbd-unreachable'
  /** A WebSocket answered, but no NBD server spoke through it. */
  | 'nbd-no-server'
  /** The NBD server has no export of that name. */
  | 'nbd-no-export'
  /** A read-only export was asked to be written (a mirror's target). */
  | 'nbd-read-only'
  /** An NBD target's size is not the source's (an export is never resized). */
  | 'nbd-wrong-size';

export class WorkerError extends Error {
  override name = 'WorkerError';
  constructor(
    readonly code: WorkerErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The job a command named is not there any more (it ended, or never ran
 * here): QMP's DeviceNotActive, or the worker's no-such-job.
 */
export function jobIsGone(err: unknown): boolean {
  return (err instanceof CommandError && err.qmpClass === 'DeviceNotActive') || (err instanceof WorkerError && err.code === 'no-such-job');
}
