/**
 * A file under Node, read and written with positional I/O on one descriptor,
 * so concurrent requests at different offsets never step on each other.
 * Node's error codes (ENOSPC, EIO, ENOENT...) are kept as they are.
 */
import * as fs from 'node:fs';
import {
  type BlockDevice,
  type BlockOp,
  BlockError,
  checkRequest,
  closedError,
  isErrno,
  readOnlyError,
} from './block-device.js';

export interface NodeFileOptions {
  readOnly?: boolean;
  /** Create the file if missing (never for a read-only open). */
  create?: boolean;
  /** Fail if the file exists (with create). */
  exclusive?: boolean;
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

  private constructor(
    private readonly fd: number,
    readonly path: string,
    private length: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, options: NodeFileOptions = {}): Promise<NodeFileDevice> {
    const readOnly = options.readOnly ?? false;
    let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
    if (!readOnly && options.create) flags |= fs.constants.O_CREAT;
    if (!readOnly && options.create && options.exclusive) flags |= fs.constants.O_EXCL;
    const fd = await call<number>('open', 0, 0, path, (cb) => fs.open(path, flags, 0o644, cb));
    try {
      const stat = await call<fs.Stats>('open', 0, 0, path, (cb) => fs.fstat(fd, cb));
      if (!stat.isFile() && !stat.isBlockDevice()) {
        throw new BlockError('EINVAL', 'open', 0, 0, `${path} is not a regular file`);
      }
      return new NodeFileDevice(fd, path, stat.size, readOnly);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get size(): number {
    return this.length;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkRequest('read', offset, into.length, this.length, true);
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
    checkRequest('write', offset, data.length, this.length, false);
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

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
    if (this.readOnly) return;
    await call<void>('flush', 0, 0, this.path, (cb) => fs.fdatasync(this.fd, (err) => cb(err, undefined)));
  }

  async resize(bytes: number): Promise<void> {
    if (this.closed) throw closedError('resize', 0, bytes);
    if (this.readOnly) throw readOnlyError('resize', 0, bytes);
    checkRequest('resize', 0, bytes, 0, false);
    await call<void>('resize', 0, bytes, this.path, (cb) => fs.ftruncate(this.fd, bytes, (err) => cb(err, undefined)));
    this.length = bytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await call<void>('close', 0, 0, this.path, (cb) => fs.close(this.fd, (err) => cb(err, undefined)));
  }
}
