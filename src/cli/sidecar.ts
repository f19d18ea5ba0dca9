/**
 * Checkpoints under Node: a sidecar file next to the target
 * (TARGET.dmcheckpoint), written atomically (a new file made exclusively
 * under a fresh name, never through a symlink, fsync, rename, fsync of the
 * directory), so a crash leaves the old checkpoint or the new one, never half
 * of one. The job flushes the target before it hands over a checkpoint, so a
 * chunk the sidecar calls clean is durable.
 *
 * A sidecar also names what it belongs to: a stamp of each image (see
 * image-stamp.ts). While the job runs, the sidecar's modification time is
 * touched every second: after a kill, it tells when the job's writes ended.
 * A checkpoint sealed after the job stopped writing (a signal, a failure)
 * is `final`: its images may not have changed at all.
 */
import * as fs from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { FormatName } from '../format/image-format.js';
import type { ImageStamp } from '../format/image-stamp.js';
import type { Checkpoint, Checkpointer } from '../mirror/types.js';
import { type ResolvedOptions, givenOptions, resolveOptions } from '../mirror/options.js';

export const SIDECAR_SUFFIX = '.dmcheckpoint';
const VERSION = 2;
const HEARTBEAT_MS = 1000;

export interface SidecarImages {
  /** The source's chain, the image first. */
  source: ImageStamp[];
  target: ImageStamp;
}

export interface SidecarContents {
  kind: 'diskmirror-checkpoint';
  version: typeof VERSION;
  source: string;
  target: string;
  sourceFormat: FormatName;
  targetFormat: FormatName;
  size: number;
  options: ResolvedOptions;
  status: string;
  savedAt: number;
  /** The serialized dirty bitmap, base64. */
  bitmap: string;
  images: SidecarImages;
  /** Sealed after the job's last write: the images are exactly as stamped. */
  final: boolean;
  /** A guest began writing the source after this checkpoint: it cannot be resumed (see mirror/checkpoints.ts). */
  sourceWriting?: boolean;
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

export class SidecarCheckpointer implements Checkpointer {
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private last: SidecarContents | null = null;
  /** The job is done with its checkpoint: a save still under way must not bring it back. */
  private removed = false;

  constructor(
    readonly path: string,
    private readonly context: { source: string; target: string; sourceFormat: FormatName; targetFormat: FormatName },
    /** The images' stamps now (called after the job flushed them). */
    private readonly stamps: () => Promise<SidecarImages>,
  ) {}

  async save(checkpoint: Checkpoint): Promise<void> {
    const contents: SidecarContents = {
      kind: 'diskmirror-checkpoint',
      version: VERSION,
      ...this.context,
      size: checkpoint.size,
      options: checkpoint.options,
      status: checkpoint.status,
      savedAt: checkpoint.savedAt,
      bitmap: Buffer.from(checkpoint.bitmap).toString('base64'),
      images: await this.stamps(),
      final: false,
    };
    if (this.removed) return;
    writeAtomically(this.path, JSON.stringify(contents));
    this.last = contents;
    this.heartbeat ??= setInterval(() => {
      const now = new Date();
      try {
        fs.utimesSync(this.path, now, now);
      } catch {
        // Gone (the job finished and removed it): nothing to keep fresh.
      }
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Marks the stored checkpoint (this job's last, or the one on disk it resumed from) as written after. */
  async markSourceWriting(): Promise<void> {
    if (this.removed) return;
    let base = this.last;
    if (!base) {
      const stored = readSidecar(this.path);
      if (!stored) return;
      const { bitmapBytes: _bitmap, touchedMs: _touched, ...contents } = stored;
      base = contents;
    }
    if (base.sourceWriting) return;
    const marked: SidecarContents = { ...base, sourceWriting: true };
    writeAtomically(this.path, JSON.stringify(marked));
    this.last = marked;
  }

  /**
   * Marks the last checkpoint final, with `images` stamped after the job's
   * last write and the images closed. False when there is none to seal.
   */
  seal(images: SidecarImages): boolean {
    this.stop();
    if (!this.last) return false;
    this.last = { ...this.last, images, final: true };
    writeAtomically(this.path, JSON.stringify(this.last));
    return true;
  }

  /** Stops touching the sidecar. */
  stop(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  async remove(): Promise<void> {
    this.removed = true;
    this.stop();
    fs.rmSync(this.path, { force: true });
  }
}

export interface ReadSidecar extends SidecarContents {
  bitmapBytes: Uint8Array;
  /** When the job's writes ended, at the latest (the sidecar's last heartbeat). */
  touchedMs: number;
}

/** Reads a sidecar; null when there is none. A damaged one is an error that names the file. */
export function readSidecar(path: string): ReadSidecar | null {
  const link = fs.lstatSync(path, { throwIfNoEntry: false });
  if (!link) return null;
  if (!link.isFile()) throw new Error(`checkpoint ${path} is not a regular file (a symlink or something else); refusing to read it`);
  let parsed: SidecarContents;
  try {
    parsed = JSON.parse(fs.readFileSync(path, 'utf8')) as SidecarContents;
  } catch (err) {
    throw new Error(`checkpoint ${path} is unreadable: ${(err as Error).message}`);
  }
  if (parsed?.kind !== 'diskmirror-checkpoint' || typeof parsed.bitmap !== 'string') {
    throw new Error(`checkpoint ${path} is not a diskmirror checkpoint`);
  }
  if (parsed.version !== VERSION || !parsed.images?.target || !Array.isArray(parsed.images.source)) {
    throw new Error(`checkpoint ${path} was written by another version of diskmirror and cannot be resumed; delete it and run the mirror again`);
  }
  const problem = damage(parsed);
  if (problem) throw new Error(`checkpoint ${path} is damaged (${problem}) and cannot be resumed; delete it and run the mirror again`);
  return { ...parsed, bitmapBytes: new Uint8Array(Buffer.from(parsed.bitmap, 'base64')), touchedMs: link.mtimeMs };
}

/** What is wrong with a checkpoint's fields, or null: every field a resume reads has its type, its options are valid options. */
function damage(c: SidecarContents): string | null {
  const text = (v: unknown) => typeof v === 'string';
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const time = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!text(c.source) || !text(c.target)) return 'its image names';
  if (!count(c.size)) return 'its size';
  if (!time(c.savedAt)) return 'its time';
  if (typeof c.final !== 'boolean') return 'its final mark';
  if (c.sourceWriting !== undefined && typeof c.sourceWriting !== 'boolean') return 'its mark of source writes';
  for (const stamp of [...c.images.source, c.images.target] as unknown[]) {
    const s = stamp as Partial<ImageStamp> | null;
    if (typeof s !== 'object' || s === null || !text(s.name) || !text(s.key) || !count(s.size) || !time(s.modifiedMs)) return 'its image stamps';
  }
  if (typeof c.options !== 'object' || c.options === null || Array.isArray(c.options)) return 'its options';
  try {
    resolveOptions(givenOptions(c.options), { targetIsZero: false });
  } catch (err) {
    return `its options: ${(err as Error).message}`;
  }
  return null;
}
