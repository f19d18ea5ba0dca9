/**
 * Image locks under Node, as QEMU takes them: shared to read, exclusive to
 * write, held for as long as the file is open. One rule for every diskmirror
 * process, whatever was built here: each takes what it can, and each
 * honours all of it.
 *
 * - QEMU's lock bytes (qemu-lock-bytes.ts), as open-file-description locks
 *   through fs-native-extensions (Linux): QEMU and diskmirror refuse each
 *   other as QEMU refuses itself. OFD locks belong to the open file, not to
 *   the process, so closing another descriptor of the same file (a second
 *   open of it in this process) keeps them, which POSIX record locks would
 *   not.
 * - flock(2) through fs-ext: diskmirrors keep to one writer at a time even
 *   where the lock bytes cannot be taken.
 * - Lock files beside the image (node-lock-files.ts), for a process that holds
 *   no kernel lock (no native build, DISKMIRROR_LOCKS=files), or where the
 *   kernel's lock table cannot be read (not Linux), since the others could
 *   not see its kernel locks then.
 *
 * Every process then tests, after taking its own (so of two arriving
 * together at least one sees the other): the lock files, and, in the
 * kernel's lock table (node-lock-table.ts), QEMU's bytes as QEMU tests them and
 * the flock(2) locks of others. A process that takes no kernel lock still
 * sees QEMU's and the other diskmirrors'.
 */
import * as fs from 'node:fs';
import { type LockMode, BlockError, LockError } from './block-device.js';
import { ext, fsExt, ofdLocks } from './fs-ext.js';
import { lockFileHolder, takeLockFile } from './node-lock-files.js';
import { type LockEntry, covers, describeProcess, lockHolders, lockTableName, readLockTable } from './node-lock-table.js';
import { type LockTest, accessFor, lockTests, lockedBytes } from './qemu-lock-bytes.js';

export interface FileLock {
  release(): Promise<void>;
}

/** What locks images in this process, in words (for --help). */
export function lockMechanisms(): string {
  const ofd = ofdLocks() !== null;
  const flock = fsExt() !== null;
  const unseen = "QEMU's locks are seen (in /proc/locks), but QEMU does not see these";
  if (ofd) return `Locks here: QEMU's lock bytes (OFD locks, through fs-native-extensions)${flock ? ' and flock(2) (through fs-ext)' : ''}.`;
  if (flock) return `Locks here: flock(2) through fs-ext; ${unseen} (fs-native-extensions is missing).`;
  return `Locks here: lock files beside the images (IMAGE.dmlock), as the native lock calls are missing\n(or DISKMIRROR_LOCKS=files); ${unseen}.`;
}

/**
 * A refusal: who holds the image (empty: to be found in the lock table,
 * among the locks `unknown` names), and which of QEMU's tests failed.
 */
class Conflict extends Error {
  constructor(
    readonly holder: string,
    readonly test?: LockTest,
    readonly unknown?: 'flock' | 'write lock',
  ) {
    super(holder);
  }
}

const UNSUPPORTED = new Set(['ENOLCK', 'EOPNOTSUPP', 'ENOTSUP', 'EINVAL']);

/** flock(2) where fs-ext is there: true if taken, false where this file system has none. */
async function takeFlock(fd: number, mode: LockMode): Promise<boolean> {
  const fx = fsExt();
  if (!fx) return false;
  try {
    await ext<void>((cb) => fx.flock(fd, mode === 'shared' ? 'shnb' : 'exnb', (err) => cb(err, undefined)));
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') throw new Conflict('', undefined, 'flock');
    if (UNSUPPORTED.has(code)) return false;
    throw err;
  }
}

/** QEMU's bytes for `mode`, locked shared; null where OFD locks cannot be taken (no native build, a file system without). */
function takeQemuBytes(fd: number, mode: LockMode): number[] | null {
  const ofd = ofdLocks();
  if (!ofd) return null;
  const taken: number[] = [];
  for (const byte of lockedBytes(accessFor(mode))) {
    let granted: boolean;
    try {
      granted = ofd.tryLock(fd, byte, 1, { shared: true });
    } catch (err) {
      for (const b of taken) ofd.unlock(fd, b, 1);
      if (UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) return null;
      throw err;
    }
    if (!granted) {
      // Somebody holds a write lock over the byte (not QEMU: it takes shared locks only).
      for (const b of taken) ofd.unlock(fd, b, 1);
      throw new Conflict('', undefined, 'write lock');
    }
    taken.push(byte);
  }
  return taken;
}

/** The first of QEMU's tests for `mode` that somebody else's lock fails, as QEMU runs them. */
function qemuConflict(table: LockEntry[], file: string, mode: LockMode, own: readonly number[]): LockTest | null {
  for (const test of lockTests(accessFor(mode))) {
    const holders = table.filter((e) => e.kind !== 'FLOCK' && covers(e, file, test.byte)).length;
    if (holders > (own.includes(test.byte) ? 1 : 0)) return test;
  }
  return null;
}

/** Another process's flock(2) lock that keeps `mode` from being taken. */
function flockConflict(table: LockEntry[], file: string, mode: LockMode): LockEntry | undefined {
  return table.find((e) => e.kind === 'FLOCK' && e.file === file && e.pid !== process.pid && (e.type === 'WRITE' || mode === 'exclusive'));
}

/** Words for whoever holds a lock on `file` that `matches`. */
function holderWords(table: LockEntry[] | null, file: string, matches: (e: LockEntry) => boolean): string {
  const known = table?.find((e) => matches(e) && e.pid > 0 && e.pid !== process.pid);
  if (known) return describeProcess(known.pid);
  // OFD locks (QEMU's) show no pid in the table: look for the descriptor holding one.
  const pid = lockHolders(file, matches).find((p) => p !== process.pid);
  return pid !== undefined ? describeProcess(pid) : 'another process';
}

/**
 * Locks the file open on `fd` (opened from `path`) for `mode`. Throws a
 * LockError naming the holder when someone holds a conflicting lock.
 */
export async function lockFile(fd: number, path: string, mode: LockMode): Promise<FileLock> {
  const stat = fs.fstatSync(fd);
  const undo: (() => unknown)[] = [];
  const release = async () => {
    while (undo.length > 0) await undo.pop()!();
  };
  try {
    const flocked = await takeFlock(fd, mode);
    if (flocked) undo.push(() => ext<void>((cb) => fsExt()!.flock(fd, 'un', (err) => cb(err, undefined))).catch(() => {}));
    const bytes = takeQemuBytes(fd, mode);
    if (bytes) undo.push(() => bytes.forEach((b) => ofdLocks()!.unlock(fd, b, 1)));
    const kernel = flocked || bytes !== null;
    const table = readLockTable();
    const file = lockTableName(fd, stat);
    if (!kernel || table === null) {
      const taken = takeLockFile(path, mode);
      if ('holder' in taken) throw new Conflict(taken.holder);
      if ('handle' in taken) {
        const handle = taken.handle;
        undo.push(() => handle.release());
      } else if (mode === 'exclusive' && !kernel) {
        // A directory that takes no new file: a reader goes on (no writer could lock there either), a writer needs a lock others see.
        const code = taken.unwritable.code === 'EROFS' ? 'EROFS' : 'EACCES';
        throw new BlockError(code, 'open', 0, 0, `${path}: cannot be locked for writing: no lock file can be made beside it (${taken.unwritable.code}), and no kernel lock can be taken here`, { cause: taken.unwritable });
      }
    } else {
      const holder = lockFileHolder(path, mode);
      if (holder !== null) throw new Conflict(holder);
    }
    if (table) {
      const test = qemuConflict(table, file, mode, bytes ?? []);
      if (test) throw new Conflict(holderWords(table, file, (e) => e.kind !== 'FLOCK' && covers(e, file, test.byte)), test);
      const other = flocked ? undefined : flockConflict(table, file, mode);
      if (other) throw new Conflict(describeProcess(other.pid));
    }
  } catch (err) {
    await release();
    if (!(err instanceof Conflict)) throw err;
    let holder = err.holder;
    if (err.unknown) {
      const file = lockTableName(fd, stat);
      const kind = err.unknown;
      holder = holderWords(readLockTable(), file, (e) => e.file === file && (kind === 'flock' ? e.kind === 'FLOCK' : e.type === 'WRITE'));
    }
    throw new LockError(path, mode, holder, err.test && { permission: err.test.permission, shared: err.test.shared });
  }
  return { release };
}
