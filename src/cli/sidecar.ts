/**
 * Checkpoints under Node: a sidecar file next to the target
 * (TARGET.dmcheckpoint), written atomically (a new file made exclusively
 * under a fresh name, never through a symlink, fsync, rename, fsync of the
 * directory), so a crash leaves the old checkpoint or the new one, never half
 * of one. The rules every checkpoint store keeps are
 * mirror/checkpoint-store.ts's; this is how a file keeps them: the record is
 * JSON (its bitmap in base64), and its heartbeat is the file's modification
 * time, touched every second while the job runs.
 */
import * as fs from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { FormatName } from '../format/image-format.js';
import {
  type CheckpointImages,
  type CheckpointRecord,
  type ReadCheckpoint,
  StoredCheckpoints,
  isCurrentVersion,
  recordDamage,
  recordOf,
} from '../mirror/checkpoint-store.js';
import type { Checkpoint } from '../mirror/types.js';

export const SIDECAR_SUFFIX = '.dmcheckpoint';

/** A job's record in a sidecar: its images named by absolute paths. */
export interface SidecarRecord extends CheckpointRecord<string> {
  sourceFormat: FormatName;
}

/** The file as written: the record, its bitmap in base64 (JSON has no bytes). */
export interface SidecarFile extends Omit<SidecarRecord, 'bitmap'> {
  kind: 'diskmirror-checkpoint';
  bitmap: string;
}

export function sidecarPath(targetPath: string): string {
  return resolve(targetPath) + SIDECAR_SUFFIX;
}

let counter = 0;

/** Replaces `path` with `text` atomically; the temporary file is new, never a planted one. */
function writeAtomically(path: string, text: string): void {
  const dir = dirname(path);
  let tmp = '';
  let fd = -1;
  for (let attempt = 0; fd < 0; attempt++) {
    tmp = join(dir, `${basename(path)}.tmp-${process.pid}-${counter++}${Math.random().toString(36).slice(2, 8)}`);
    try {
      fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 5) throw err;
    }
  }
  try {
    try {
      fs.writeSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dirFd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

/** One job's checkpoints in the sidecar at `path`. */
export class SidecarCheckpointer extends StoredCheckpoints<SidecarRecord> {
  constructor(
    readonly path: string,
    private readonly context: { source: string; target: string; sourceFormat: FormatName; targetFormat: FormatName },
    stamps: () => Promise<CheckpointImages>,
  ) {
    super(stamps);
  }

  protected record(checkpoint: Checkpoint, images: CheckpointImages): SidecarRecord {
    return { ...this.context, ...recordOf(checkpoint, images) };
  }

  /** Written at once (before the promise settles): a rename's new modification time is the heartbeat. */
  protected async put(record: SidecarRecord): Promise<void> {
    const { bitmap, ...rest } = record;
    const file: SidecarFile = { kind: 'diskmirror-checkpoint', ...rest, bitmap: Buffer.from(bitmap).toString('base64') };
    writeAtomically(this.path, JSON.stringify(file));
  }

  protected async erase(): Promise<void> {
    fs.rmSync(this.path, { force: true });
  }

  protected async beat(): Promise<void> {
    const now = new Date();
    try {
      fs.utimesSync(this.path, now, now);
    } catch {
      // Gone (the job finished and removed it): nothing to keep fresh.
    }
  }

  async read(): Promise<ReadCheckpoint<SidecarRecord> | null> {
    const read = readSidecar(this.path);
    if (!read) return null;
    const { kind: _kind, bitmap: _base64, bitmapBytes, writesEndedMs, ...record } = read;
    return { record: { ...record, bitmap: bitmapBytes }, writesEndedMs };
  }
}

/** A sidecar read and checked: the file's fields, its bitmap's bytes, and when the job's writes ended at the latest (its last heartbeat). */
export interface ReadSidecar extends SidecarFile {
  bitmapBytes: Uint8Array;
  writesEndedMs: number;
}

/** Reads a sidecar; null when there is none. A damaged one is an error that names the file. */
export function readSidecar(path: string): ReadSidecar | null {
  const link = fs.lstatSync(path, { throwIfNoEntry: false });
  if (!link) return null;
  if (!link.isFile()) throw new Error(`checkpoint ${path} is not a regular file (a symlink or something else); refusing to read it`);
  let parsed: SidecarFile;
  try {
    parsed = JSON.parse(fs.readFileSync(path, 'utf8')) as SidecarFile;
  } catch (err) {
    throw new Error(`checkpoint ${path} is unreadable: ${(err as Error).message}`);
  }
  if (parsed?.kind !== 'diskmirror-checkpoint' || typeof parsed.bitmap !== 'string') {
    throw new Error(`checkpoint ${path} is not a diskmirror checkpoint`);
  }
  if (!isCurrentVersion(parsed)) {
    throw new Error(`checkpoint ${path} was written by another version of diskmirror and cannot be resumed; delete it and run the mirror again`);
  }
  const bitmapBytes = new Uint8Array(Buffer.from(parsed.bitmap, 'base64'));
  const problem = recordDamage({ ...parsed, bitmap: bitmapBytes }, (source) => typeof source === 'string');
  if (problem) throw new Error(`checkpoint ${path} is damaged (${problem}) and cannot be resumed; delete it and run the mirror again`);
  return { ...parsed, bitmapBytes, writesEndedMs: link.mtimeMs };
}
