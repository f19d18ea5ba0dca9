/**
 * Image files in a directory tree under Node. Names are paths, relative to
 * the working directory; backing files are relative to the image naming them.
 * New files are made as NAME.dmpart-PID-N beside their final name (the real
 * path, when NAME is a symlink to an image) and renamed into place.
 */
import * as fs from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve as resolvePath } from 'node:path';
import { type FileIdentity, BlockError, LockError } from './block-device.js';
import type { FileStore, StoreFile } from './file-store.js';
import { followRename } from './node-lock-files.js';
import { NodeFileDevice, fileIdentity } from './node-file.js';

const TEMPORARY_MARK = '.dmpart-';

let counter = 0;

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** The real path of `path` if it exists (so a symlinked image is replaced where it lives), else `path`. */
function finalPath(path: string): string {
  try {
    return fs.realpathSync(path);
  } catch {
    return path;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoOf(err) !== 'ESRCH';
  }
}

/** Removes NAME.dmpart-PID-N files whose process is gone (a killed create or convert). */
function removeStaleTemporaries(path: string): void {
  const dir = dirname(path);
  const prefix = basename(path) + TEMPORARY_MARK;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    const full = join(dir, name);
    // Only plain files we could have made: never follow or remove anything else.
    if (fs.lstatSync(full, { throwIfNoEntry: false })?.isFile()) fs.rmSync(full, { force: true });
  }
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some file systems cannot sync a directory; the rename itself has happened.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export class NodeFileStore implements FileStore {
  constructor(private readonly cwd: string = process.cwd()) {}

  private path(name: string): string {
    return resolvePath(this.cwd, name);
  }

  resolve(name: string): string {
    return this.path(name);
  }

  async open(name: string, options: { readOnly: boolean; forceShare?: boolean }): Promise<StoreFile> {
    const path = this.path(name);
    let device: NodeFileDevice;
    try {
      device = await NodeFileDevice.open(path, { readOnly: options.readOnly, ...(options.forceShare && options.readOnly ? { lock: false } : {}) });
    } catch (err) {
      // Name the image as the person did.
      if (err instanceof LockError) throw new LockError(name, err.mode, err.holder, err.refused);
      throw err;
    }
    return { name: path, device, identity: device.openedAs };
  }

  async identify(name: string): Promise<FileIdentity | null> {
    try {
      return fileIdentity(await fs.promises.stat(this.path(name)));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return null;
      throw err;
    }
  }

  backingName(name: string, from: string): string {
    return isAbsolute(name) ? name : resolvePath(dirname(this.path(from)), name);
  }

  async createTemporary(name: string): Promise<StoreFile> {
    const final = finalPath(this.path(name));
    removeStaleTemporaries(final);
    for (let attempt = 0; ; attempt++) {
      const path = `${final}${TEMPORARY_MARK}${process.pid}-${counter++}${Math.random().toString(36).slice(2, 8)}`;
      try {
        const device = await NodeFileDevice.open(path, { create: true, exclusive: true });
        return { name: path, device, identity: device.openedAs };
      } catch (err) {
        // Something is there already (planted, or left over): never reuse it, pick another name.
        if ((err as BlockError).code === 'EEXIST' && attempt < 5) continue;
        if (err instanceof BlockError) {
          const cause = err.cause as NodeJS.ErrnoException | undefined;
          const why = cause?.code === 'ENOENT' ? `the directory ${dirname(final)} does not exist` : (cause?.message ?? err.detail).replace(/, open '.*'$/, '');
          throw new BlockError(err.code, 'open', 0, 0, `cannot create ${name}: ${why}`, { cause: err });
        }
        throw err;
      }
    }
  }

  async publish(temporary: string, name: string, options: { replace: boolean }): Promise<void> {
    const final = finalPath(this.path(name));
    // A lock file of the new image goes to its final name first: the name never shows it unlocked.
    const holder = followRename(temporary, final);
    if (holder !== null) throw new LockError(name, 'exclusive', holder);
    if (options.replace) {
      fs.renameSync(temporary, final);
    } else {
      // link() fails if the name exists: the new file never replaces one that appeared meanwhile.
      try {
        fs.linkSync(temporary, final);
        fs.unlinkSync(temporary);
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'EEXIST') throw new BlockError('EEXIST', 'open', 0, 0, `${name} appeared while it was being created; it was left alone`, { cause: err });
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw err;
        // A file system without hard links: check, then rename.
        if (fs.lstatSync(final, { throwIfNoEntry: false })) throw new BlockError('EEXIST', 'open', 0, 0, `${name} appeared while it was being created; it was left alone`);
        fs.renameSync(temporary, final);
      }
    }
    syncDirectory(dirname(final));
  }

  async remove(name: string): Promise<void> {
    fs.rmSync(this.path(name), { force: true });
  }
}
