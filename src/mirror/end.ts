/**
 * How a mirror job ends, the same for the command line and the worker, as
 * launch.ts is how it starts. Once the job is gone (or halted for the
 * process to exit on a signal), its images are closed; a target the launch
 * made and the job never wrote goes, with its checkpoint; and the
 * checkpoint of a job that stopped for good with something to resume (it
 * failed, or was halted after storing its state) is sealed: the closed
 * images are opened again read-only (nothing writes on such an open),
 * stamped, and the checkpoint marked final with those stamps, so a resume
 * may ask that the images be exactly so.
 */
import type { FileStore } from '../block/file-store.js';
import { openChain } from '../format/image-access.js';
import type { FormatName } from '../format/image-format.js';
import { type ImageStamp, stampChain } from '../format/image-stamp.js';
import type { CheckpointImages, CheckpointStore } from './checkpoint-store.js';
import type { Launched, LaunchSource } from './launch.js';
import type { JobOutcome } from './types.js';

export interface Ending {
  /** The store the job was launched over. */
  store: FileStore;
  /** The source as launched: closed here. */
  source: LaunchSource;
  /** The stamps of a source outside the store (a picked file, a URL): stamped once, it is never written. */
  sourceStamps?(): Promise<ImageStamp[]>;
  launched: Launched<CheckpointStore>;
  /**
   * The store removes a file under the lock an open image holds (OPFS): the
   * target is dropped once closed. Otherwise (a file under Node) it is
   * unlinked while still held, so nothing opens it in between.
   */
  dropOnceClosed?: boolean;
}

/**
 * How the job stopped: gone with its outcome, or halted for the process to
 * exit, with its state stored in a last checkpoint (`halted`) or not.
 */
export type JobStop = JobOutcome | 'halted' | 'halted-unsaved';

export interface Ended {
  /** The target the launch made was removed (nothing was written into it), with its checkpoint. */
  dropped: boolean;
  /** The checkpoint was sealed: the job resumes from it. */
  sealed: boolean;
}

/** Ends a job's life: closes, drops a never-written target, seals what is to be resumed (see above). */
export async function endMirror(e: Ending, stop: JobStop): Promise<Ended> {
  const { launched } = e;
  const checkpoints = launched.checkpointer;
  const halted = stop === 'halted' || stop === 'halted-unsaved';
  const dropping = !halted && stop !== 'completed';
  let dropped = false;
  try {
    if (dropping && !e.dropOnceClosed) dropped = await launched.dropIfUnwritten();
    await e.source.image.close().catch(() => {});
    await launched.target.image.close().catch(() => {});
    if (dropping && e.dropOnceClosed) dropped = await launched.dropIfUnwritten();
    // Nothing was copied into a target this job made: it went, and its checkpoint goes too.
    if (dropped) await checkpoints?.remove(launched.job.id).catch(() => {});
    // A failed job keeps its checkpoint (fix the cause, then resume): sealed now that nothing writes.
    const sealing = checkpoints !== null && !dropped && (stop === 'failed' || stop === 'halted');
    const sealed = sealing && (await seal(e, checkpoints));
    return { dropped, sealed };
  } finally {
    checkpoints?.stop();
  }
}

async function seal(e: Ending, checkpoints: CheckpointStore): Promise<boolean> {
  try {
    return await checkpoints.seal(await stampsOnceClosed(e));
  } catch {
    return false;
  }
}

/** The images' stamps once closed, each opened again read-only to read them. */
async function stampsOnceClosed(e: Ending): Promise<CheckpointImages> {
  const { source, launched, store } = e;
  const stampClosed = async (name: string, format: FormatName): Promise<ImageStamp[]> => {
    const opened = await openChain(store, name, { readOnly: true, format });
    try {
      return await stampChain(store, opened, true);
    } finally {
      await opened.image.close();
    }
  };
  const sourceStamps = source.opened ? await stampClosed(source.opened.name, source.image.format) : await e.sourceStamps!();
  const [target] = await stampClosed(launched.target.name, launched.target.image.format);
  return { source: sourceStamps, target: target! };
}
