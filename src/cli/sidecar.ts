/**
 * Checkpoints under Node: a sidecar file next to the target
 * (TARGET.dmcheckpoint), written atomically (temporary file, fsync, rename,
 * fsync of the directory), so a crash leaves the old checkpoint or the new
 * one, never half of one. The job flushes the target before it hands over a
 * checkpoint, so a chunk the sidecar calls clean is durable.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { FormatName } from '../format/image-format.js';
import type { Checkpoint, Checkpointer } from '../mirror/mirror-job.js';
import type { ResolvedOptions } from '../mirror/options.js';

export const SIDECAR_SUFFIX = '.dmcheckpoint';

export interface SidecarContents {
  kind: 'diskmirror-checkpoint';
  version: 1;
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
}

export function sidecarPath(targetPath: string): string {
  return resolve(targetPath) + SIDECAR_SUFFIX;
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

export class SidecarCheckpointer implements Checkpointer {
  constructor(
    private readonly path: string,
    private readonly context: { source: string; target: string; sourceFormat: FormatName; targetFormat: FormatName },
  ) {}

  async save(checkpoint: Checkpoint): Promise<void> {
    const contents: SidecarContents = {
      kind: 'diskmirror-checkpoint',
      version: 1,
      ...this.context,
      size: checkpoint.size,
      options: checkpoint.options,
      status: checkpoint.status,
      savedAt: checkpoint.savedAt,
      bitmap: Buffer.from(checkpoint.bitmap).toString('base64'),
    };
    writeAtomically(this.path, JSON.stringify(contents));
  }

  async remove(): Promise<void> {
    rmSync(this.path, { force: true });
  }
}

/** Reads a sidecar; null when there is none. A damaged one is an error that names the file. */
export function readSidecar(path: string): (SidecarContents & { bitmapBytes: Uint8Array }) | null {
  if (!existsSync(path)) return null;
  let parsed: SidecarContents;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as SidecarContents;
  } catch (err) {
    throw new Error(`checkpoint ${path} is unreadable: ${(err as Error).message}`);
  }
  if (parsed?.kind !== 'diskmirror-checkpoint' || parsed.version !== 1 || typeof parsed.bitmap !== 'string') {
    throw new Error(`checkpoint ${path} is not a diskmirror checkpoint (version 1)`);
  }
  return { ...parsed, bitmapBytes: new Uint8Array(Buffer.from(parsed.bitmap, 'base64')) };
}
