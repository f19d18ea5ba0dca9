/**
 * Lock files beside an image: what a diskmirror process that cannot take
 * kernel locks (no native lock calls, DISKMIRROR_LOCKS=files) leaves for the
 * others to see, and what every diskmirror process honours.
 *
 * IMAGE.dmlock is the writer's, IMAGE.dmlock.PID.N each reader's; each holds
 * its owner's pid, the process's start time (so a reused pid is not taken
 * for the holder) and a token of its own. A lock whose process is gone
 * (killed) is stale: whoever looks at it removes it. They name the image by
 * its real path: a hard link escapes them (kernel locks, which follow the
 * file, do not), and a new image renamed into place takes its lock file
 * along (followRename).
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { type LockMode } from './block-device.js';
import { describeProcess } from './node-lock-table.js';

interface LockFileContents {
  pid: number;
  mode: LockMode;
  /** The process's start time (Linux), so a reused pid is not taken for the holder. */
  started?: string;
  /** Which of this process's locks it is (a lock file can be handed from one to another by a rename). */
  token?: string;
}

const WRITER_SUFFIX = '.dmlock';

let counter = 0;

function processStart(pid: number): string | undefined {
  try {
    // Field 22 of /proc/PID/stat, counted after the command name's closing parenthesis.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

const ourStart = processStart(process.pid);

function ours(owner: LockFileContents): boolean {
  return owner.pid === process.pid && owner.started === ourStart;
}

function alive(owner: LockFileContents): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  if (owner.started !== undefined) {
    const now = processStart(owner.pid);
    if (now !== undefined && now !== owner.started) return false;
  }
  return true;
}

function removeQuietly(path: string): void {
  try {
    fs.rmSync(path, { force: true });
  } catch {
    // A read-only directory: the stale file stays, and is ignored.
  }
}

function readOwner(path: string): LockFileContents | null | 'unreadable' {
  try {
    return JSON.parse(fs.readFileSync(path, 'utf8')) as LockFileContents;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? null : 'unreadable';
  }
}

/** The live owner of a lock file; null (after removing it) when stale or gone. */
function liveOwner(path: string): LockFileContents | null {
  const owner = readOwner(path);
  if (owner === null) return null;
  if (owner === 'unreadable') {
    // Half-written by a process that died mid-write, or not ours: stale only once old.
    const age = Date.now() - (fs.statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0);
    if (age < 5000) return { pid: 0, mode: 'exclusive' };
    removeQuietly(path);
    return null;
  }
  if (ours(owner) || alive(owner)) return owner;
  removeQuietly(path);
  return null;
}

function holderWords(owner: LockFileContents): string {
  return owner.pid > 0 ? describeProcess(owner.pid) : 'another process';
}

/** The name lock files use for `path`: its real path, or its real directory's for a file not there yet. */
export function lockFileName(path: string): string {
  try {
    return fs.realpathSync(path);
  } catch {
    try {
      return join(fs.realpathSync(dirname(path)), basename(path));
    } catch {
      return path;
    }
  }
}

function readerFiles(real: string): string[] {
  const dir = dirname(real);
  const prefix = `${basename(real)}${WRITER_SUFFIX}.`;
  try {
    return fs.readdirSync(dir).filter((n) => n.startsWith(prefix)).map((n) => join(dir, n));
  } catch {
    return [];
  }
}

/**
 * Who, by the lock files, keeps a lock in `mode` on `path` from being taken
 * (the writer's file for a reader; the writer's or any reader's for a
 * writer), in words; null if nobody. Stale files met on the way are removed
 * (`sweep`: readers' too, though a reader need not look at them). `except`
 * is a lock file of our own to leave out.
 */
export function lockFileHolder(path: string, mode: LockMode, options: { except?: string; sweep?: boolean } = {}): string | null {
  const real = lockFileName(path);
  const writer = `${real}${WRITER_SUFFIX}`;
  const files = [writer, ...(mode === 'exclusive' || options.sweep ? readerFiles(real) : [])];
  let holder: string | null = null;
  for (const file of files) {
    if (file === options.except) continue;
    const owner = liveOwner(file);
    if (owner && holder === null && (mode === 'exclusive' || file === writer)) holder = holderWords(owner);
  }
  return holder;
}

/** The lock files this process holds, by the real path they lock. */
const held = new Map<string, LockFileHandle>();

export class LockFileHandle {
  private released = false;
  constructor(
    /** The real path of the image. */
    public image: string,
    /** The lock file. */
    public file: string,
    readonly mode: LockMode,
    readonly token: string,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    if (held.get(this.image) === this) held.delete(this.image);
    // Only while it is still ours: a rename may have handed it to another lock of this process.
    const owner = readOwner(this.file);
    if (owner && owner !== 'unreadable' && owner.token === this.token) removeQuietly(this.file);
  }
}

/** Creates `file` exclusively (never through a symlink) holding our pid; false if it exists. */
function createLockFile(file: string, contents: LockFileContents): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    fs.writeSync(fd, JSON.stringify(contents));
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

function contentsFor(mode: LockMode): LockFileContents {
  return { pid: process.pid, mode, ...(ourStart !== undefined ? { started: ourStart } : {}), token: randomBytes(8).toString('hex') };
}

export type LockFileResult = { handle: LockFileHandle } | { holder: string } | { unwritable: NodeJS.ErrnoException };

/**
 * Takes a lock file for `path` in `mode`: creates ours, then looks for the
 * other side (whoever comes second backs off). `unwritable`: the directory
 * takes no new file (read-only, no permission).
 */
export function takeLockFile(path: string, mode: LockMode): LockFileResult {
  const real = lockFileName(path);
  const contents = contentsFor(mode);
  const file = mode === 'exclusive' ? `${real}${WRITER_SUFFIX}` : `${real}${WRITER_SUFFIX}.${process.pid}.${counter++}`;
  for (let attempt = 0; ; attempt++) {
    try {
      if (createLockFile(file, contents)) break;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EROFS' || e.code === 'EACCES' || e.code === 'EPERM') return { unwritable: e };
      throw err;
    }
    const owner = liveOwner(file);
    if (owner) return { holder: holderWords(owner) };
    if (attempt >= 3) return { holder: 'another process' };
  }
  const handle = new LockFileHandle(real, file, mode, contents.token!);
  const holder = lockFileHolder(path, mode, { except: file, sweep: true });
  if (holder !== null) {
    handle.release();
    return { holder };
  }
  if (mode === 'exclusive') held.set(real, handle);
  return { handle };
}

/**
 * A new image is about to be renamed from `from` to `to`: the writer's lock
 * file this process holds for `from` becomes `to`'s, before the rename, so
 * that the name never shows the image unlocked. Taken over from another
 * lock of this process (the old file being replaced); refused (the holder,
 * in words) when another live process holds `to`.
 */
export function followRename(from: string, to: string): string | null {
  const handle = held.get(lockFileName(from));
  if (!handle) return null;
  const real = lockFileName(to);
  const target = `${real}${WRITER_SUFFIX}`;
  for (let attempt = 0; ; attempt++) {
    try {
      fs.linkSync(handle.file, target);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = liveOwner(target);
    if (owner && ours(owner)) {
      fs.renameSync(handle.file, target);
      return moved(handle, real, target);
    }
    if (owner) return holderWords(owner);
    if (attempt >= 3) return 'another process';
  }
  const reader = lockFileHolder(to, 'exclusive', { except: target });
  if (reader !== null) {
    removeQuietly(target);
    return reader;
  }
  removeQuietly(handle.file);
  return moved(handle, real, target);
}

function moved(handle: LockFileHandle, real: string, file: string): null {
  held.delete(handle.image);
  handle.image = real;
  handle.file = file;
  held.set(real, handle);
  return null;
}
