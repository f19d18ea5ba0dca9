/**
 * Checkpoints in the browser: IndexedDB, through idb, with the schema as a
 * type. One record per job; the job flushes its target before it hands a
 * checkpoint over, so a chunk a record calls clean is durable. No other I/O
 * is awaited inside a transaction.
 *
 * A record also names what it belongs to: a stamp of each image (see
 * image-stamp.ts), so a resume onto a changed image is refused. While the
 * job runs, its heartbeat record is rewritten every second: after a closed
 * tab, it tells when the job's writes ended. A record sealed after the job
 * stopped writing (it failed) is `final`: its images may not have changed
 * at all.
 */
import { dirtyChunks } from '../kernel/bitmap-serial.js';
import { type DBSchema, type IDBPDatabase, openDB } from 'idb';
import { isNbdUri } from '../block/nbd/uri.js';
import type { FormatName } from '../format/image-format.js';
import type { ImageStamp } from '../format/image-stamp.js';
import type { Checkpoint, Checkpointer } from '../mirror/types.js';
import type { ResolvedOptions } from '../mirror/options.js';
import type { SourceRef } from '../shared/source-ref.js';

/** Records of another version cannot be resumed (they do not name their images). */
export const CHECKPOINT_VERSION = 2;
const HEARTBEAT_MS = 1000;

export interface CheckpointImages {
  /** The source's chain, the image first. */
  source: ImageStamp[];
  target: ImageStamp;
}

export interface StoredCheckpoint {
  id: string;
  version?: number;
  /** An import completes by itself when resumed (records without it are mirrors). */
  kind?: 'mirror' | 'import';
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
  images?: CheckpointImages;
  /** Sealed after the job's last write: the images are exactly as stamped. */
  final?: boolean;
  /** A guest began writing the source after this checkpoint: it cannot be resumed (see mirror/checkpoints.ts). */
  sourceWriting?: boolean;
}

/** A job's heartbeat: its writes had not ended at `at` (milliseconds since the epoch). */
export interface Heartbeat {
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

export async function listCheckpoints(): Promise<StoredCheckpoint[]> {
  return (await database()).getAll('checkpoints');
}

export async function getCheckpoint(id: string): Promise<StoredCheckpoint | undefined> {
  return (await database()).get('checkpoints', id);
}

export async function getHeartbeat(id: string): Promise<Heartbeat | undefined> {
  return (await database()).get('heartbeats', id);
}

export async function deleteCheckpoint(id: string): Promise<void> {
  const tx = (await database()).transaction(['checkpoints', 'heartbeats'], 'readwrite');
  await Promise.all([tx.objectStore('checkpoints').delete(id), tx.objectStore('heartbeats').delete(id), tx.done]);
}

/** Why a stored checkpoint cannot be resumed by this version, or null. */
export function unresumable(c: StoredCheckpoint): string | null {
  if (c.version !== CHECKPOINT_VERSION || !c.images?.target || !Array.isArray(c.images.source)) {
    return 'saved by another version of diskmirror, without the stamps of its images: it cannot be resumed; discard it and mirror again';
  }
  // A job reading an export keeps one only to mark its target incomplete: nothing tells whether the export changed since.
  if (c.source?.kind === 'nbd' || isNbdUri(c.target)) return 'made by a job reading an NBD export, which nothing can check for changes since: its target is incomplete; discard it and mirror again';
  return null;
}

/** The dirty chunks' bytes of a serialized bitmap (a damaged one counts as all of it). */
function dirtyBytesOf(serialized: Uint8Array, granularity: number, size: number): number {
  try {
    return Math.min(size, dirtyChunks(serialized) * granularity);
  } catch {
    return size;
  }
}

export class IdbCheckpointer implements Checkpointer {
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private last: StoredCheckpoint | null = null;
  /** The job is done with its checkpoint: a save still under way must not bring it back. */
  private removed = false;

  constructor(
    private readonly context: { kind: 'mirror' | 'import'; source: SourceRef; target: string; targetFormat: FormatName },
    /** The images' stamps now (called after the job flushed them). */
    private readonly stamps: () => Promise<CheckpointImages>,
  ) {}

  async save(checkpoint: Checkpoint): Promise<void> {
    const images = await this.stamps();
    const record: StoredCheckpoint = {
      id: checkpoint.id,
      version: CHECKPOINT_VERSION,
      ...this.context,
      size: checkpoint.size,
      options: checkpoint.options,
      status: checkpoint.status,
      savedAt: checkpoint.savedAt,
      bitmap: checkpoint.bitmap,
      dirtyBytes: dirtyBytesOf(checkpoint.bitmap, checkpoint.options.granularity, checkpoint.size),
      images,
      final: false,
    };
    if (this.removed) return;
    const d = await database();
    // Strict: a checkpoint is a promise about the disk, so it is on the disk before the job goes on.
    const tx = d.transaction(['checkpoints', 'heartbeats'], 'readwrite', { durability: 'strict' });
    await Promise.all([tx.objectStore('checkpoints').put(record), tx.objectStore('heartbeats').put({ id: record.id, at: Date.now() }), tx.done]);
    this.last = record;
    this.heartbeat ??= setInterval(() => {
      if (this.removed || !this.last) return;
      void d.put('heartbeats', { id: this.last.id, at: Date.now() }).catch(() => {});
    }, HEARTBEAT_MS);
  }

  /** Marks the stored checkpoint (this job's last, or the one it resumed from) as written after. */
  async markSourceWriting(id: string): Promise<void> {
    if (this.removed) return;
    const d = await database();
    const base = this.last ?? (await d.get('checkpoints', id));
    if (!base || base.sourceWriting || this.removed) return;
    const marked: StoredCheckpoint = { ...base, sourceWriting: true };
    const tx = d.transaction('checkpoints', 'readwrite', { durability: 'strict' });
    await Promise.all([tx.store.put(marked), tx.done]);
    this.last = marked;
  }

  /**
   * Marks the last checkpoint final, with `images` stamped after the job's
   * last write and the images closed. False when there is none to seal.
   */
  async seal(images: CheckpointImages): Promise<boolean> {
    this.stop();
    if (!this.last || this.removed) return false;
    this.last = { ...this.last, images, final: true };
    await (await database()).put('checkpoints', this.last);
    return true;
  }

  /** Stops the heartbeat. */
  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  async remove(id: string): Promise<void> {
    this.removed = true;
    this.stop();
    await deleteCheckpoint(id);
  }
}
