/**
 * Checkpoints in the browser: IndexedDB, through idb, with the schema as a
 * type. One record per job, keyed by its id; its heartbeat is a record of
 * its own, rewritten every second while the job runs. The rules every
 * checkpoint store keeps are mirror/checkpoint-store.ts's; this is how
 * IndexedDB keeps them. No other I/O is awaited inside a transaction, and a
 * record is written with strict durability: a checkpoint is a promise about
 * the disk, so it is on the disk before the job goes on.
 */
import { type DBSchema, type IDBPDatabase, openDB } from 'idb';
import { ImageConflictError } from '../block/block-device.js';
import { isNbdUri } from '../block/nbd/uri.js';
import type { FormatName } from '../format/image-format.js';
import {
  type CheckpointImages,
  type CheckpointRecord,
  type ReadCheckpoint,
  StoredCheckpoints,
  dirtyBytesOf,
  isCurrentVersion,
  recordDamage,
  recordOf,
} from '../mirror/checkpoint-store.js';
import type { Checkpoint } from '../mirror/types.js';
import type { SourceRef } from '../shared/source-ref.js';

/** A job's record in IndexedDB. */
export interface StoredCheckpoint extends CheckpointRecord<SourceRef> {
  id: string;
  /** An import completes by itself when resumed (records without it are mirrors). */
  kind?: 'mirror' | 'import';
  /** Bytes still dirty when saved (for the list of interrupted jobs). */
  dirtyBytes: number;
}

/** A job's heartbeat: its writes had not ended at `at` (milliseconds since the epoch). */
interface Heartbeat {
  id: string;
  at: number;
}

interface DiskmirrorDB extends DBSchema {
  checkpoints: {
    key: string;
    value: StoredCheckpoint;
  };
  heartbeats: {
    key: string;
    value: Heartbeat;
  };
}

const DB_NAME = 'diskmirror';
const DB_VERSION = 2;

let db: Promise<IDBPDatabase<DiskmirrorDB>> | undefined;

function database(): Promise<IDBPDatabase<DiskmirrorDB>> {
  db ??= openDB<DiskmirrorDB>(DB_NAME, DB_VERSION, {
    upgrade(d) {
      if (!d.objectStoreNames.contains('checkpoints')) d.createObjectStore('checkpoints', { keyPath: 'id' });
      if (!d.objectStoreNames.contains('heartbeats')) d.createObjectStore('heartbeats', { keyPath: 'id' });
    },
  }).catch((err) => {
    db = undefined; // try again next time instead of failing for good
    throw err;
  });
  return db;
}

/** Every stored record as it is (of any version, unchecked: see unresumable). */
export async function listCheckpoints(): Promise<StoredCheckpoint[]> {
  return (await database()).getAll('checkpoints');
}

/** A job's record as it is (unchecked: see unresumable). */
export async function getCheckpoint(id: string): Promise<StoredCheckpoint | undefined> {
  return (await database()).get('checkpoints', id);
}

export async function deleteCheckpoint(id: string): Promise<void> {
  const tx = (await database()).transaction(['checkpoints', 'heartbeats'], 'readwrite');
  await Promise.all([tx.objectStore('checkpoints').delete(id), tx.objectStore('heartbeats').delete(id), tx.done]);
}

/** When the job of a record stopped writing, at the latest: its last heartbeat (never before the record was saved). */
export async function writesEnded(c: StoredCheckpoint): Promise<number> {
  const heartbeat = await (await database()).get('heartbeats', c.id);
  return Math.max(heartbeat?.at ?? 0, c.savedAt);
}

/** Why a record cannot be resumed by this version at all (another version, damage), or null. */
function recordProblem(c: StoredCheckpoint): string | null {
  if (!isCurrentVersion(c)) return 'saved by another version of diskmirror, without the stamps of its images: it cannot be resumed; discard it and mirror again';
  const damage = recordDamage(c, isSourceRef);
  return damage ? `damaged (${damage}): it cannot be resumed; discard it and mirror again` : null;
}

/** Why a stored checkpoint cannot be resumed by this version, or null. */
export function unresumable(c: StoredCheckpoint): string | null {
  const problem = recordProblem(c);
  if (problem) return problem;
  // A job reading an export keeps one only to mark its target incomplete: nothing tells whether the export changed since.
  if (c.source.kind === 'nbd' || isNbdUri(c.target)) return 'made by a job reading an NBD export, which nothing can check for changes since: its target is incomplete; discard it and mirror again';
  return null;
}

function isSourceRef(source: unknown): boolean {
  const s = source as Partial<Record<string, unknown>> | null;
  if (typeof s !== 'object' || s === null) return false;
  const named = (field: string) => typeof s[field] === 'string';
  return (s.kind === 'opfs' && named('name')) || (s.kind === 'file' && named('name')) || (s.kind === 'url' && named('url')) || (s.kind === 'nbd' && named('uri'));
}

/** One job's checkpoints in IndexedDB. */
export class IdbCheckpointer extends StoredCheckpoints<StoredCheckpoint> {
  constructor(
    private readonly id: string,
    private readonly context: { kind: 'mirror' | 'import'; source: SourceRef; target: string; targetFormat: FormatName },
    stamps: () => Promise<CheckpointImages>,
  ) {
    super(stamps);
  }

  protected record(checkpoint: Checkpoint, images: CheckpointImages): StoredCheckpoint {
    const dirtyBytes = dirtyBytesOf(checkpoint.bitmap, checkpoint.options.granularity, checkpoint.size);
    return { id: this.id, ...this.context, ...recordOf(checkpoint, images), dirtyBytes };
  }

  protected async put(record: StoredCheckpoint): Promise<void> {
    const tx = (await database()).transaction(['checkpoints', 'heartbeats'], 'readwrite', { durability: 'strict' });
    await Promise.all([tx.objectStore('checkpoints').put(record), tx.objectStore('heartbeats').put({ id: this.id, at: Date.now() }), tx.done]);
  }

  protected erase(): Promise<void> {
    return deleteCheckpoint(this.id);
  }

  protected async beat(): Promise<void> {
    await (await database()).put('heartbeats', { id: this.id, at: Date.now() });
  }

  async read(): Promise<ReadCheckpoint<StoredCheckpoint> | null> {
    const record = await getCheckpoint(this.id);
    if (!record) return null;
    const problem = recordProblem(record);
    if (problem) throw new ImageConflictError(record.target, `the checkpoint of "${this.id}" was ${problem}`);
    return { record, writesEndedMs: await writesEnded(record) };
  }
}
