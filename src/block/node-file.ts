/**
 * A file under Node, read and written with positional I/O on one descriptor,
 * so concurrent requests at different offsets never step on each other.
 * Node's error codes (ENOSPC, EIO, ENOENT...) are kept as they are.
 *
 * Only regular files and block devices are images: a FIFO, a socket, a
 * directory or a character device is refused at open, without blocking (the
 * open is non-blocking, so a FIFO with no writer cannot hang it). The file is
 * locked while open (see node-lock.ts), and holes are found with SEEK_DATA /
 * SEEK_HOLE where fs-ext is there.
 */
import * as fs from 'node:fs';
import {
  type BlockDevice,
  type BlockOp,
  type FileIdentity,
  type LockMode,
  BlockError,
  checkDeviceRequest,
  closedError,
  isErrno,
  readOnlyError,
} from './block-device.js';
import { SEEK_DATA, SEEK_HOLE, ext, fsExt } from './fs-ext.js';
import { type FileLock, lockFile } from './node-lock.js';

export interface NodeFileOptions {
  readOnly?: boolean;
  /** Create the file if missing (never for a read-only open). */
  create?: boolean;
  /** With create: fail if anything (a file, a symlink, even a dangling one) is there. */
  exclusive?: boolean;
  /** The lock taken while open; default shared when read-only, else exclusive; false for none. */
  lock?: LockMode | false;
}

/** What a file that is not an image is, for the message that refuses it. */
function kindOf(stat: fs.Stats): string | null {
  if (stat.isFile() || stat.isBlockDevice()) return null;
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

export function fileIdentity(stat: fs.Stats): FileIdentity {
  return { key: `node:${stat.dev}:${stat.ino}`, size: stat.size, modifiedMs: stat.mtimeMs };
}

function nodeError(err: NodeJS.ErrnoException, op: BlockOp, offset: number, bytes: number, path: string): BlockError {
  const code = isErrno(err.code) ? err.code : err.code === 'EISDIR' ? 'EINVAL' : 'EIO';
  return new BlockError(code, op, offset, bytes, `${path}: ${err.message}`, { cause: err });
}

function call<T>(op: BlockOp, offset: number, bytes: number, path: string, fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, value) => (err ? reject(nodeError(err, op, offset, bytes, path)) : resolve(value)));
  });
}

export class NodeFileDevice implements BlockDevice {
  private closed = false;
  /** SEEK_DATA is not supported on this file (a block device, an old file system). */
  private noSeekData = false;

  private constructor(
    private readonly fd: number,
    readonly path: string,
    private length: number,
    readonly readOnly: boolean,
    private readonly stat: fs.Stats,
    private readonly lock: FileLock | null,
  ) {}

  static async open(path: string, options: NodeFileOptions = {}): Promise<NodeFileDevice> {
    const readOnly = options.readOnly ?? false;
    let flags = (readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) | fs.constants.O_NONBLOCK;
    if (!readOnly && options.create) flags |= fs.constants.O_CREAT;
    if (!readOnly && options.create && options.exclusive) flags |= fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
    let fd: number;
    try {
      fd = await call<number>('open', 0, 0, path, (cb) => fs.open(path, flags, 0o644, cb));
    } catch (err) {
      const cause = (err as BlockError).cause as NodeJS.ErrnoException | undefined;
      // A socket cannot be opened at all; say what it is.
      if (cause?.code === 'ENXIO') {
        const kind = kindOf(fs.statSync(path, { throwIfNoEntry: false }) ?? new fs.Stats()) ?? 'a socket';
        throw new BlockError('EINVAL', 'open', 0, 0, `${path} is ${kind}, not an image file`, { cause });
      }
      if (cause?.code === 'EISDIR') throw new BlockError('EINVAL', 'open', 0, 0, `${path} is a directory, not an image file`, { cause });
      throw err;
    }
    try {
      const stat = await call<fs.Stats>('open', 0, 0, path, (cb) => fs.fstat(fd, cb));
      const kind = kindOf(stat);
      if (kind) throw new BlockError('EINVAL', 'open', 0, 0, `${path} is ${kind}, not an image file`);
      const mode = options.lock ?? (readOnly ? 'shared' : 'exclusive');
      const lock = mode ? await lockFile(fd, path, mode) : null;
      const size = stat.isBlockDevice() ? await blockDeviceSize(fd, path) : stat.size;
      return new NodeFileDevice(fd, path, size, readOnly, stat, lock);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** The file's identity now (size and modification time change as it is written). */
  async identity(): Promise<FileIdentity> {
    if (this.closed) throw closedError('open', 0, 0);
    const stat = await call<fs.Stats>('open', 0, 0, this.path, (cb) => fs.fstat(this.fd, cb));
    return fileIdentity(stat);
  }

  /** The identity the file had when opened (device and inode do not change). */
  get openedAs(): FileIdentity {
    return fileIdentity(this.stat);
  }

  async allocation(offset: number, bytes: number): Promise<{ allocated: boolean; bytes: number }> {
    if (this.closed) throw closedError('read', offset, bytes);
    const end = Math.min(offset + bytes, this.length);
    const fx = fsExt();
    if (!fx || this.noSeekData || offset >= end) return { allocated: true, bytes: Math.max(1, end - offset) };
    const seek = (whence: number) => ext<number>((cb) => fx.seek(this.fd, offset, whence, cb));
    let data: number;
    try {
      data = await seek(SEEK_DATA);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENXIO: no data from offset to the end of the file.
      if (code === 'ENXIO') return { allocated: false, bytes: end - offset };
      this.noSeekData = true;
      return { allocated: true, bytes: end - offset };
    }
    if (data > offset) return { allocated: false, bytes: Math.min(data, end) - offset };
    let hole: number;
    try {
      hole = await seek(SEEK_HOLE);
    } catch {
      return { allocated: true, bytes: end - offset };
    }
    return { allocated: true, bytes: Math.max(1, Math.min(hole, end) - offset) };
  }

  get size(): number {
    return this.length;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkDeviceRequest('read', offset, into.length, this.length, true);
    let done = 0;
    while (done < into.length) {
      const n = await call<number>('read', offset, into.length, this.path, (cb) =>
        fs.read(this.fd, into, done, into.length - done, offset + done, cb),
      );
      if (n === 0) {
        throw new BlockError('EIO', 'read', offset, into.length, `${this.path}: end of file at ${offset + done}; the file shrank`);
      }
      done += n;
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('write', offset, data.length);
    if (this.readOnly) throw readOnlyError('write', offset, data.length);
    checkDeviceRequest('write', offset, data.length, this.length, false);
    let done = 0;
    while (done < data.length) {
      const n = await call<number>('write', offset, data.length, this.path, (cb) =>
        fs.write(this.fd, data, done, data.length - done, offset + done, cb),
      );
      if (n === 0) throw new BlockError('ENOSPC', 'write', offset, data.length, `${this.path}: short write`);
      done += n;
    }
    if (offset + data.length > this.length) this.length = offset + data.length;
  }

  /**
   * A failed fdatasync may have dropped dirty pages, and a later one would
   * then succeed without them: after one failure every flush fails, until
   * the file is opened again (as QEMU's file-posix does).
   */
  private flushFailed: BlockError | null = null;

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
    if (this.readOnly) return;
    if (this.flushFailed) {
      throw new BlockError('EIO', 'flush', 0, 0, `${this.path}: an earlier flush failed (${this.flushFailed.code}); what was written before it may be lost, so no flush can succeed until the file is opened again`, { cause: this.flushFailed });
    }
    try {
      await call<void>('flush', 0, 0, this.path, (cb) => fs.fdatasync(this.fd, (err) => cb(err, undefined)));
    } catch (err) {
      this.flushFailed = err as BlockError;
      throw err;
    }
  }

  async resize(bytes: number): Promise<void> {
    if (this.closed) throw closedError('resize', 0, bytes);
    if (this.readOnly) throw readOnlyError('resize', 0, bytes);
    checkDeviceRequest('resize', 0, bytes, 0, false);
    await call<void>('resize', 0, bytes, this.path, (cb) => fs.ftruncate(this.fd, bytes, (err) => cb(err, undefined)));
    this.length = bytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.lock?.release();
    await call<void>('close', 0, 0, this.path, (cb) => fs.close(this.fd, (err) => cb(err, undefined)));
  }
}

/** A block device's size: its end, found by seeking there (fstat says 0). */
async function blockDeviceSize(fd: number, path: string): Promise<number> {
  const fx = fsExt();
  if (fx) return ext<number>((cb) => fx.seek(fd, 0, fx.constants.SEEK_END ?? 2, cb));
  // Without fs-ext: read the size sysfs gives for the device.
  const stat = fs.fstatSync(fd);
  const major = Math.floor(stat.rdev / 256) & 0xfff;
  const minor = (stat.rdev & 0xff) | (Math.floor(stat.rdev / 4096) & ~0xff);
  try {
    return Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512;
  } catch (err) {
    throw new BlockError('ENOTSUP', 'open', 0, 0, `${path}: the size of this block device cannot be found`, { cause: err });
  }
}
