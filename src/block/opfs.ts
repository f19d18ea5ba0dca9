/**
 * A file in the Origin Private File System, through a
 * FileSystemSyncAccessHandle (dedicated workers only). The handle's calls are
 * synchronous; they are wrapped in the async contract like every device.
 *
 * Mapped here, once: QuotaExceededError, a short write count and Chromium's
 * no-space result (0xFFFFFFF8, -8 read as unsigned) are ENOSPC; a file
 * already open through another handle (NoModificationAllowedError) is EBUSY;
 * NotFoundError is ENOENT.
 */
import { type BlockDevice, type BlockOp, type Errno, BlockError, checkDeviceRequest, closedError, readOnlyError } from './block-device.js';

/** The parts of FileSystemSyncAccessHandle this device uses. */
export interface SyncAccessHandle {
  read(buffer: ArrayBufferView, options?: { at?: number }): number;
  write(buffer: ArrayBufferView, options?: { at?: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

interface OpfsFileHandle {
  createSyncAccessHandle(options?: { mode?: 'readwrite' | 'read-only' | 'readwrite-unsafe' }): Promise<SyncAccessHandle>;
}

/** Chromium returns this count from write() when the disk or quota is full. */
const CHROMIUM_NO_SPACE = 0xfffffff8;

const DOM_CODES: Record<string, Errno> = {
  QuotaExceededError: 'ENOSPC',
  NoModificationAllowedError: 'EBUSY',
  NotFoundError: 'ENOENT',
  NotAllowedError: 'EACCES',
  SecurityError: 'EACCES',
  TypeMismatchError: 'EINVAL',
  InvalidModificationError: 'EINVAL',
  InvalidStateError: 'EBADF',
};

export function opfsError(err: unknown, op: BlockOp, offset: number, bytes: number, name: string): BlockError {
  if (err instanceof BlockError) return err;
  const domName = (err as { name?: string } | null)?.name ?? '';
  const code = DOM_CODES[domName] ?? (err instanceof TypeError || err instanceof RangeError ? 'EINVAL' : 'EIO');
  const detail =
    domName === 'NoModificationAllowedError'
      ? `${name} is open elsewhere (another tab or job holds it)`
      : domName === 'NotFoundError'
        ? `${name} does not exist`
        : `${name}: ${domName}: ${(err as Error)?.message}`;
  return new BlockError(code, op, offset, bytes, detail, { cause: err });
}

export interface OpfsOpenOptions {
  create?: boolean;
  readOnly?: boolean;
}

export class OpfsDevice implements BlockDevice {
  private closed = false;
  private length: number;

  constructor(
    private readonly handle: SyncAccessHandle,
    readonly name: string,
    readonly readOnly = false,
  ) {
    this.length = handle.getSize();
  }

  /** Opens `name` in `dir` (an OPFS directory handle). */
  static async open(dir: FileSystemDirectoryHandle, name: string, options: OpfsOpenOptions = {}): Promise<OpfsDevice> {
    const readOnly = options.readOnly ?? false;
    let file: FileSystemFileHandle;
    try {
      file = await dir.getFileHandle(name, { create: !readOnly && (options.create ?? false) });
    } catch (err) {
      throw opfsError(err, 'open', 0, 0, name);
    }
    return OpfsDevice.openHandle(file, name, { readOnly });
  }

  /** Opens the file behind `file` (named `name` in messages). */
  static async openHandle(file: FileSystemFileHandle, name: string, options: { readOnly?: boolean } = {}): Promise<OpfsDevice> {
    const readOnly = options.readOnly ?? false;
    const sync = file as unknown as OpfsFileHandle;
    try {
      let handle: SyncAccessHandle;
      try {
        // Read-only opens let several readers share a file where the browser supports modes.
        handle = await sync.createSyncAccessHandle(readOnly ? { mode: 'read-only' } : undefined);
      } catch (err) {
        if (readOnly && (err as Error)?.name === 'TypeError') handle = await sync.createSyncAccessHandle();
        else throw err;
      }
      return new OpfsDevice(handle, name, readOnly);
    } catch (err) {
      throw opfsError(err, 'open', 0, 0, name);
    }
  }

  get size(): number {
    return this.length;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkDeviceRequest('read', offset, into.length, this.length, true);
    let done = 0;
    while (done < into.length) {
      let n: number;
      try {
        n = this.handle.read(into.subarray(done), { at: offset + done });
      } catch (err) {
        throw opfsError(err, 'read', offset, into.length, this.name);
      }
      if (n === 0 || n > into.length - done) {
        throw new BlockError('EIO', 'read', offset, into.length, `${this.name}: read returned ${n} at ${offset + done}`);
      }
      done += n;
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('write', offset, data.length);
    if (this.readOnly) throw readOnlyError('write', offset, data.length);
    checkDeviceRequest('write', offset, data.length, this.length, false);
    if (data.length === 0) return;
    let n: number;
    try {
      n = this.handle.write(data, { at: offset });
    } catch (err) {
      throw opfsError(err, 'write', offset, data.length, this.name);
    }
    if (n !== data.length) {
      const what = n >>> 0 === CHROMIUM_NO_SPACE ? 'the browser reported no space' : `short write: ${n} of ${data.length} bytes`;
      // Whatever did land is not trusted: the caller keeps the range dirty.
      this.length = Math.max(this.length, this.handle.getSize());
      throw new BlockError('ENOSPC', 'write', offset, data.length, `${this.name}: ${what}`);
    }
    if (offset + n > this.length) this.length = offset + n;
  }

  /** After a failed flush, every flush fails until the file is opened again (what was written may be lost). */
  private flushFailed: BlockError | null = null;

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
    if (this.readOnly) return;
    if (this.flushFailed) {
      throw new BlockError('EIO', 'flush', 0, 0, `${this.name}: an earlier flush failed (${this.flushFailed.code}); what was written before it may be lost, so no flush can succeed until the image is opened again`, { cause: this.flushFailed });
    }
    try {
      this.handle.flush();
    } catch (err) {
      this.flushFailed = opfsError(err, 'flush', 0, 0, this.name);
      throw this.flushFailed;
    }
  }

  async resize(bytes: number): Promise<void> {
    if (this.closed) throw closedError('resize', 0, bytes);
    if (this.readOnly) throw readOnlyError('resize', 0, bytes);
    checkDeviceRequest('resize', 0, bytes, 0, false);
    try {
      this.handle.truncate(bytes);
    } catch (err) {
      throw opfsError(err, 'resize', 0, bytes, this.name);
    }
    this.length = bytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly) this.handle.flush();
    } catch (err) {
      throw opfsError(err, 'close', 0, 0, this.name);
    } finally {
      this.handle.close();
    }
  }
}
