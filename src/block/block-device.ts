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
    // An open has no range: the words come first ("x.raw is a FIFO, not an image file (EINVAL)").
    super(op === 'open' && bytes === 0 ? `${detail} (${code})` : `${op} of ${bytes} bytes at offset ${offset}: ${code} (${detail})`, options);
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

/**
 * An image this command or job may not touch: another process or job holds
 * it, or it is the very file on the other side. Nothing was written.
 */
export class ImageConflictError extends Error {
  override name = 'ImageConflictError';
  /** EBUSY (somebody holds it, or it is the other side), or EEXIST (a new image's name is taken). */
  readonly code: Errno;
  constructor(
    /** The image as the user named it. */
    readonly image: string,
    message: string,
    options?: { cause?: unknown; code?: Errno },
  ) {
    super(message, options);
    this.code = options?.code ?? 'EBUSY';
  }
}

export type LockMode = 'shared' | 'exclusive';

/**
 * QEMU's "Failed to get "write" lock": a shared lock (to read) meets a
 * writer, or an exclusive one (to write) meets anybody. `refused` names the
 * permission of QEMU's lock bytes that failed, when they did (QEMU's own
 * words: `Failed to get shared "write" lock` when somebody holds write and
 * we do not share it, `Failed to get "write" lock` when we want it and
 * somebody does not share it).
 */
export class LockError extends ImageConflictError {
  override name = 'LockError';
  constructor(
    image: string,
    readonly mode: LockMode,
    /** Who holds it, in words: `diskmirror (pid 42)`, `the job "mirror0"`. */
    readonly holder: string,
    readonly refused?: { permission: string; shared: boolean },
  ) {
    super(image, lockMessage(image, mode, holder, refused));
  }
}

/** What somebody holding a permission does to the image, for a refusal's words. */
const HOLDING: Record<string, string> = { write: 'is being written', 'consistent read': 'is being read', resize: 'may be resized' };

function lockMessage(image: string, mode: LockMode, holder: string, refused?: { permission: string; shared: boolean }): string {
  if (!refused) refused = { permission: 'write', shared: mode === 'shared' };
  const doing = refused.shared ? (HOLDING[refused.permission] ?? 'is in use') : 'is in use';
  return `Failed to get ${refused.shared ? 'shared ' : ''}"${refused.permission}" lock: ${image} ${doing} by ${holder}`;
}
