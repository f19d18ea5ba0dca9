/**
 * The block device contract: bytes at offsets. Every layer above (formats,
 * the mirror) sees only this, so a device can be memory, a Node file, an OPFS
 * file, a Blob, an HTTP resource or a fault injector wrapping any of them.
 */

/** Errno-like codes. Devices map their platform's failures to these, once, at their boundary. */
export const ERRNOS = [
  'EIO',
  'ENOSPC',
  'ENOENT',
  'EBUSY',
  'EACCES',
  'EPERM',
  'EROFS',
  'EINVAL',
  'ENOTSUP',
  'EFBIG',
  'ECANCELED',
  'EEXIST',
  'EBADF',
  'ENOMEM',
  'ETIMEDOUT',
  'ESTALE',
] as const;
export type Errno = (typeof ERRNOS)[number];

export function isErrno(value: unknown): value is Errno {
  return typeof value === 'string' && (ERRNOS as readonly string[]).includes(value);
}

export type BlockOp = 'open' | 'read' | 'write' | 'flush' | 'discard' | 'resize' | 'close';

/** Each code's strerror() text, as QEMU reports it (e.g. in BLOCK_JOB_COMPLETED's error). */
const STRERROR: Record<Errno, string> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  ENOENT: 'No such file or directory',
  EBUSY: 'Device or resource busy',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EROFS: 'Read-only file system',
  EINVAL: 'Invalid argument',
  ENOTSUP: 'Operation not supported',
  EFBIG: 'File too large',
  ECANCELED: 'Operation canceled',
  EEXIST: 'File exists',
  EBADF: 'Bad file descriptor',
  ENOMEM: 'Cannot allocate memory',
  ETIMEDOUT: 'Connection timed out',
  ESTALE: 'Stale file handle',
};

export function describeErrno(code: Errno): string {
  return STRERROR[code];
}

/** A failed device operation: which one, where, and why. */
export class BlockError extends Error {
  override name = 'BlockError';
  constructor(
    readonly code: Errno,
    readonly op: BlockOp,
    readonly offset: number,
    readonly bytes: number,
    /** What went wrong, in words (without the code). */
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${op} of ${bytes} bytes at offset ${offset}: ${code} (${detail})`, options);
  }
}

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
}

/** Checks a request's offset and length; reads must also stay inside `size`. */
export function checkRequest(op: BlockOp, offset: number, bytes: number, size: number, inside: boolean): void {
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
