/**
 * Image locks under Node, as QEMU takes them: shared to read, exclusive to
 * write, held for as long as the file is open.
 *
 * With fs-ext (the usual case) a lock is flock(2) on the open file, so it
 * follows the file (a symlink or a hard link to it finds the same lock) and
 * dies with the process. A writer also takes a POSIX record lock over the
 * whole file: QEMU's byte-range locks conflict with it both ways, so a
 * running QEMU or qemu-img refuses an image diskmirror writes, and
 * diskmirror refuses to write one QEMU has open.
 *
 * Without fs-ext's native build, lock files beside the image stand in:
 * IMAGE.dmlock for the writer, IMAGE.dmlock.PID.N for each reader, each
 * holding its owner's pid; a lock whose process is gone is stale and taken
 * over. They see the file by its real path (hard links escape them).
 */
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { type LockMode, LockError } from './block-device.js';
import { ext, fsExt } from './fs-ext.js';

export interface FileLock {
  readonly mechanism: 'flock' | 'lock-file' | 'none';
  release(): Promise<void>;
}

/** Which mechanism locks images in this process (for --help and messages). */
export function lockMechanism(): 'flock' | 'lock-file' {
  return fsExt() ? 'flock' : 'lock-file';
}

/**
 * Locks the file open on `fd` (opened from `path`; `writable`: opened for
 * writing). Throws a LockError naming the holder when someone else holds a
 * conflicting lock.
 */
export async function lockFile(fd: number, path: string, mode: LockMode, writable: boolean): Promise<FileLock> {
  const fx = fsExt();
  if (!fx) return lockWithFiles(path, mode);
  const inode = fs.fstatSync(fd);
  try {
    await ext<void>((cb) => fx.flock(fd, mode === 'shared' ? 'shnb' : 'exnb', (err) => cb(err, undefined)));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') throw new LockError(path, mode, holderOf(inode, ['FLOCK']));
    // A file system without flock (some network mounts): lock files instead.
    if (code === 'ENOLCK' || code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EINVAL') return lockWithFiles(path, mode);
    throw err;
  }
  const unlock = () => ext<void>((cb) => fx.flock(fd, 'un', (err) => cb(err, undefined))).catch(() => {});
  if (mode === 'exclusive' && writable) {
    try {
      await ext<number>((cb) => fx.fcntl(fd, 'setlk', fx.constants.F_WRLCK!, cb));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EACCES') {
        await unlock();
        throw new LockError(path, mode, holderOf(inode, ['POSIX', 'OFDLCK']));
      }
      // No record locks on this file system: flock alone keeps diskmirrors apart.
    }
  }
  return { mechanism: 'flock', release: unlock };
}

// ---- who holds it -------------------------------------------------------------

/** Linux's dev_t split as /proc/locks prints it ("fe:00"). */
function devName(dev: number): string {
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

/** The process holding a lock on the file, from /proc/locks; words for a message. */
export function holderOf(stat: fs.Stats, kinds: string[]): string {
  let text = '';
  try {
    text = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return 'another process';
  }
  const where = `${devName(stat.dev)}:${stat.ino}`;
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    // "1: FLOCK  ADVISORY  WRITE 4633 fe:00:2146728 0 EOF"; waiters have "->" after the number.
    if (fields[1] === '->' || !kinds.includes(fields[1] ?? '') || fields[5] !== where) continue;
    const pid = Number(fields[4]);
    if (pid > 0 && pid !== process.pid) return describeProcess(pid);
    if (fields[1] === 'OFDLCK') return "another process (QEMU's image lock)";
  }
  return 'another process';
}

/** `diskmirror (pid 42)`, or the program's name when it is not diskmirror. */
export function describeProcess(pid: number): string {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (/diskmirror/.test(cmdline)) return `diskmirror (pid ${pid})`;
    const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return `${comm} (pid ${pid})`;
  } catch {
    return `pid ${pid}`;
  }
}

// ---- lock files (no fs-ext) ------------------------------------------------------

interface LockFileContents {
  pid: number;
  mode: LockMode;
  /** The process's start time (Linux), so a reused pid is not taken for the holder. */
  started?: string;
}

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

/** The live owner of a lock file; null (after removing it) when stale or gone. */
function liveOwner(path: string): LockFileContents | null {
  let owner: LockFileContents;
  try {
    owner = JSON.parse(fs.readFileSync(path, 'utf8')) as LockFileContents;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    // Half-written by a process that died mid-write, or not ours: treat as stale only if old.
    const age = Date.now() - fs.statSync(path, { throwIfNoEntry: false })!.mtimeMs;
    if (age < 5000) return { pid: 0, mode: 'exclusive' };
    fs.rmSync(path, { force: true });
    return null;
  }
  if (owner.pid === process.pid && owner.started === processStart(process.pid)) return owner;
  if (alive(owner)) return owner;
  fs.rmSync(path, { force: true });
  return null;
}

function holderWords(owner: LockFileContents): string {
  return owner.pid > 0 ? describeProcess(owner.pid) : 'another process';
}

/** Creates `path` exclusively (never through a symlink) holding our pid; false if it exists. */
function createLockFile(path: string, mode: LockMode): boolean {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    const contents: LockFileContents = { pid: process.pid, mode };
    const started = processStart(process.pid);
    if (started !== undefined) contents.started = started;
    fs.writeSync(fd, JSON.stringify(contents));
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

async function lockWithFiles(path: string, mode: LockMode): Promise<FileLock> {
  let real: string;
  try {
    real = fs.realpathSync(path);
  } catch {
    real = path;
  }
  const dir = dirname(real);
  const writerFile = `${real}.dmlock`;
  const readerPrefix = `${basename(real)}.dmlock.`;
  const readers = (): string[] => {
    try {
      return fs.readdirSync(dir).filter((n) => n.startsWith(readerPrefix)).map((n) => join(dir, n));
    } catch {
      return [];
    }
  };
  const mine = mode === 'exclusive' ? writerFile : `${real}.dmlock.${process.pid}.${counter++}`;
  for (let attempt = 0; ; attempt++) {
    let created: boolean;
    try {
      created = createLockFile(mine, mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Nobody can write beside a file on a read-only directory: a reader needs no lock there.
      if (mode === 'shared' && (code === 'EROFS' || code === 'EACCES' || code === 'EPERM')) return { mechanism: 'none', release: async () => {} };
      throw err;
    }
    if (!created) {
      const owner = liveOwner(mine);
      if (owner) throw new LockError(path, mode, holderWords(owner));
      if (attempt < 3) continue;
      throw new LockError(path, mode, 'another process');
    }
    break;
  }
  const release = async () => {
    fs.rmSync(mine, { force: true });
  };
  // Now that our file is there, look for the other side; whoever comes second backs off.
  const others = mode === 'exclusive' ? readers() : [writerFile];
  for (const other of others) {
    const owner = liveOwner(other);
    if (owner) {
      await release();
      throw new LockError(path, mode, holderWords(owner));
    }
  }
  return { mechanism: 'lock-file', release };
}
