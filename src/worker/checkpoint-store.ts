/**
 * Checkpoints in the browser: IndexedDB, through idb, with the schema as a
 * type. One record per job; the job flushes its target before it hands a
 * checkpoint over, so a chunk a record calls clean is durable. No other I/O
 * is awaited inside a transaction.
 */
import { type DBSchema, type IDBPDatabase, openDB } from 'idb';
import type { FormatName } from '../format/image-format.js';
import type { Checkpoint, Checkpointer } from '../mirror/mirror-job.js';
import type { ResolvedOptions } from '../mirror/options.js';
import type { SourceRef } from './source-ref.js';

export type { SourceRef } from './source-ref.js';

export interface StoredCheckpoint {
  id: string;
  source: SourceRef;
  target: string;
  targetFormat: FormatName;
  size: number;
  options: ResolvedOptions;
  status: string;
  savedAt: number;
  bitmap: Uint8Array;
  /** Bytes still dirty when saved (for the list of interrupted jobs). */
  dirtyBytes: number;
}

interface DiskmirrorDB extends DBSchema {
  checkpoints: {
    key: string;
    value: StoredCheckpoint;
  };
}

const DB_NAME = 'diskmirror';
const DB_VERSION = 1;

let db: Promise<IDBPDatabase<DiskmirrorDB>> | undefined;

function database(): Promise<IDBPDatabase<DiskmirrorDB>> {
  db ??= openDB<DiskmirrorDB>(DB_NAME, DB_VERSION, {
    upgrade(d) {
      if (!d.objectStoreNames.contains('checkpoints')) d.createObjectStore('checkpoints', { keyPath: 'id' });
    },
  }).catch((err) => {
    db = undefined; // try again next time instead of failing for good
    throw err;
  });
  return db;
}

export async function listCheckpoints(): Promise<StoredCheckpoint[]> {
  return (await database()).getAll('checkpoints');
}

export async function getCheckpoint(id: string): Promise<StoredCheckpoint | undefined> {
  return (await database()).get('checkpoints', id);
}

export async function deleteCheckpoint(id: string): Promise<void> {
  await (await database()).delete('checkpoints', id);
}

/** Counts the dirty chunks' bytes of a serialized bitmap (its header is 16 bytes). */
function dirtyBytesOf(bitmap: Uint8Array, granularity: number, size: number): number {
  let bits = 0;
  for (let i = 16; i < bitmap.length; i++) {
    let b = bitmap[i]!;
    while (b) {
      bits += b & 1;
      b >>= 1;
    }
  }
  return Math.min(size, bits * granularity);
}

export class IdbCheckpointer implements Checkpointer {
  constructor(private readonly context: { source: SourceRef; target: string; targetFormat: FormatName }) {}

  async save(checkpoint: Checkpoint): Promise<void> {
    const record: StoredCheckpoint = {
      id: checkpoint.id,
      ...this.context,
      size: checkpoint.size,
      options: checkpoint.options,
      status: checkpoint.status,
      savedAt: checkpoint.savedAt,
      bitmap: checkpoint.bitmap,
      dirtyBytes: dirtyBytesOf(checkpoint.bitmap, checkpoint.options.granularity, checkpoint.size),
    };
    await (await database()).put('checkpoints', record);
  }

  async remove(id: string): Promise<void> {
    await deleteCheckpoint(id);
  }
}
