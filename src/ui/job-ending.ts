/**
 * How a job ended, in one sentence and the actions that follow from it:
 * "Done: copy.qcow2 (qcow2, 8.00 MiB)" with Download; "Failed at 5.00 MiB:
 * source read error (EIO); copy.qcow2 is incomplete" with Delete and
 * Retry; "Cancelled; copy.qcow2 holds what was copied". Words only: the
 * job panel draws them. A target that is an NBD export stays on its
 * server: nothing here downloads or deletes it.
 */
import { isNbdUri } from '../qapi/nbd.js';
import type { EventData } from '../qapi/events.js';
import type { JobOutcome } from '../mirror/types.js';
import { formatSize } from '../util/size.js';
import type { JobKind, JobRelease } from '../worker/api-types.js';
import { type StorageFacts, storageChanged, storageFullWords } from './storage.js';

export interface EndFacts {
  kind: JobKind;
  outcome: JobOutcome;
  target: string;
  /** BLOCK_JOB_COMPLETED's error, when it failed. */
  error?: string;
  /** The last BLOCK_JOB_ERROR: where and how it failed. */
  lastError?: EventData['BLOCK_JOB_ERROR'];
  /** What the job had copied when it ended. */
  offset: number;
  /** Once the job let go of its images: the target as listed now. */
  release?: JobRelease;
  /** The browser's storage as it reported it once the job had ended (`atEnd`) and as it reports it now. */
  storage?: { atEnd: StorageFacts | null; now: StorageFacts | null };
}

export type EndAction = 'download' | 'delete' | 'retry';

export interface Ending {
  tone: 'done' | 'failed' | 'cancelled';
  /** The state line's first words. */
  word: string;
  text: string;
  /** What to do about it, when the text alone does not say (the storage ran out). */
  advice?: string;
  actions: EndAction[];
}

/** The browser's storage refused the target more space (not an injected fault: its rule says so instead). */
export function metStorageLimit(lastError: EventData['BLOCK_JOB_ERROR'] | null | undefined): boolean {
  return lastError?.operation === 'write' && lastError.errno === 'ENOSPC' && !lastError.fault;
}

function described(name: string, release: JobRelease | undefined): string {
  const image = release?.targetImage;
  return image ? `${name} (${image.format}, ${formatSize(image.virtualSize)})` : name;
}

/** "source read error (EIO)", from the failing request. */
export function failureWords(e: EventData['BLOCK_JOB_ERROR']): string {
  return `${e.operation === 'read' ? 'source read' : 'target write'} error (${e.errno})`;
}

export function describeEnding(f: EndFacts): Ending {
  const exported = isNbdUri(f.target);
  // Known once the job let go: the target is gone when the job made it and wrote nothing into it (never an export).
  const gone = !exported && f.release !== undefined && f.release.targetImage === null;
  // What can be done with the target here: an export is neither downloaded nor deleted.
  const kept = (actions: EndAction[]): EndAction[] => (exported ? actions.filter((a) => a === 'retry') : actions);
  if (f.outcome === 'completed') {
    return { tone: 'done', word: 'Done', text: `Done: ${described(f.target, f.release)}`, actions: kept(gone ? [] : ['download']) };
  }
  if (f.outcome === 'cancelled') {
    const text = gone ? `Cancelled before anything was copied; ${f.target} was not kept` : `Cancelled; ${f.target} holds what was copied`;
    return { tone: 'cancelled', word: 'Cancelled', text, actions: kept(gone ? [] : ['delete']) };
  }
  const why = f.lastError ? failureWords(f.lastError) : (f.error ?? 'an error');
  const at = f.lastError && f.lastError.bytes > 0 ? f.lastError.offset : f.offset;
  const left = gone ? `nothing was copied, so ${f.target} was not kept` : `${f.target} is incomplete`;
  const text = `Failed at ${formatSize(at)}: ${why}; ${left}`;
  const actions = kept(gone ? ['retry'] : ['delete', 'retry']);
  if (exported || !metStorageLimit(f.lastError)) return { tone: 'failed', word: 'Failed', text, actions };
  // Retry would meet the same wall until space is freed (or the browser keeps more): it is offered once something changed.
  const changed = storageChanged(f.storage?.atEnd ?? null, f.storage?.now ?? null);
  return {
    tone: 'failed',
    word: 'Failed',
    text: `${text}: the browser's storage ran out`,
    advice: storageFullWords(f.storage?.atEnd ?? null, changed ? 'press Retry' : 'Retry, offered here once something changed'),
    actions: changed ? actions : actions.filter((a) => a !== 'retry'),
  };
}
