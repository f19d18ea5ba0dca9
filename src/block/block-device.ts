/**
 * The block device contract: bytes at offsets. Every layer above (formats,
 * the mirror) sees only this, so a device can be memory, a Node file, an OPFS
 * file, a Blob, an HTTP resource or a fault injector wrapping any of them.
 */

import { BlockError, isErrno } from '../qapi/errors.js';
import type { BlockOp, Errno } from '../qapi/errors.js';

export {
  type BlockOp,
  type Errno,
  type LockHolder,
  type LockMode,
  BlockError,
  ERRNOS,
  ImageConflictError,
  LockError,
  describeErrno,
  describeLockHolder,
  isErrno,
} from '../qapi/errors.js';

/** Turns anything thrown into a BlockError, keeping the original as `cause`. */
export function toBlockError(err: unknown, op: BlockOp, offset: number, bytes: number): BlockError {
  if (err instanceof BlockError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return new BlockError(isErrno(code) ? code : 'EIO', op, offset, bytes, message, { cause: err });
}

export interface BlockDevice {
  /** Size in bytes. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Fills all of `into` with the bytes at `offset`, or throws a BlockError. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /** Writes all of `data` at `offset`; a device may grow to hold it. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  close(): Promise<void>;
  resize?(bytes: number): Promise<void>;
  /** Drops a range: it may read back as zeroes or as what it was; advisory. */
  discard?(offset: number, bytes: number): Promise<void>;
  /**
   * Makes a range read as zeroes without sending them (NBD_CMD_WRITE_ZEROES);
   * `unmap` lets the device free the space. Devices without it get zeroes written.
   */
  writeZeroes?(offset: number, bytes: number, options: { unmap: boolean }): Promise<void>;
  /** What identifies the file under the device now (devices over files have one). */
  identity?(): Promise<FileIdentity>;
  /**
   * Whether the file stores bytes at `offset` (a hole reads as zeroes and
   * takes no space), and for how many bytes from there the answer holds
   * (at least 1, at most `bytes`). Devices that cannot tell leave it out.
   */
  allocation?(offset: number, bytes: number): Promise<{ allocated: boolean; bytes: number }>;
  /**
   * Present on a device that may lose writes it acknowledged without an
   * error of their own (an NBD export whose server restarts forgets what it
   * held unflushed): `listener` hears of its flushes and of such a loss (see
   * DurabilityNotice). Returns what stops the listening.
   */
  watchDurability?(listener: (notice: DurabilityNotice) => void): () => void;
}

/**
 * What a device that may lose acknowledged writes says. One flush at a time
 * is followed: 'flush-started' (it covers the writes acknowledged until
 * now), then 'flushed' (those are durable) or 'flush-failed'. 'lost': the
 * writes acknowledged since the last 'flushed' may be gone (`error` says
 * why: the connection was lost); `recoverable` when writing the same bytes
 * again repairs it (false when a format's metadata may be gone with them).
 */
export type DurabilityNotice = { kind: 'flush-started' } | { kind: 'flushed' } | { kind: 'flush-failed' } | { kind: 'lost'; error: BlockError; recoverable: boolean };

/** What identifies a file: the same key is the same file, whatever name reached it. */
export interface FileIdentity {
  /** `node:DEV:INODE` under Node, `opfs:NAME` for the app's images. */
  key: string;
  /** Bytes in the file. */
  size: number;
  /** Last modification, in milliseconds (fractions where the platform has them). */
  modifiedMs: number;
}

/** Checks a request's offset and length; reads must also stay inside `size`. */
export function checkDeviceRequest(op: BlockOp, offset: number, bytes: number, size: number, inside: boolean): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new BlockError('EINVAL', op, offset, bytes, `offset ${offset} is not a non-negative integer`);
  }
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new BlockError('EINVAL', op, offset, bytes, `length ${bytes} is not a non-negative integer`);
  }
  if (inside && offset + bytes > size) {
    throw new BlockError('EINVAL', op, offset, bytes, `range ends at ${offset + bytes}, past the device size ${size}`);
  }
  if (!Number.isSafeInteger(offset + bytes)) {
    throw new BlockError('EFBIG', op, offset, bytes, 'range ends past 2^53');
  }
}

export function readOnlyError(op: BlockOp, offset: number, bytes: number): BlockError {
  return new BlockError('EROFS', op, offset, bytes, 'the device is read-only');
}

export function closedError(op: BlockOp, offset: number, bytes: number): BlockError {
  return new BlockError('EBADF', op, offset, bytes, 'the device is closed');
}
