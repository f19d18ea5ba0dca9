/**
 * The errors both sides of the worker boundary know by class and code: the
 * page tells them apart with instanceof (never by their words), the engine
 * throws them, and error-transfer.ts (src/shared) carries each across with
 * its fields. The engine's folders re-export them where they belong
 * (BlockError from block-device.ts, FormatError from image-format.ts...).
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
    options?: { cause?: unknown; httpStatus?: number },
  ) {
    // An open has no range: the words come first ("x.raw is a FIFO, not an image file (EINVAL)").
    super(op === 'open' && bytes === 0 ? `${detail} (${code})` : `${op} of ${bytes} bytes at offset ${offset}: ${code} (${detail})`, options);
    if (options?.httpStatus !== undefined) this.httpStatus = options.httpStatus;
  }

  /** The HTTP status a server answered, when that is what failed. */
  readonly httpStatus?: number;
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
 * Who holds an image, as data: a job (of this tab, or `elsewhere`: another
 * tab), or somebody named in words (a download, a deletion, a process).
 * The page words it as it needs (its own job's role, another tab's job).
 */
export type LockHolder = { kind: 'job'; id: string; elsewhere?: boolean } | { kind: 'named'; words: string; elsewhere?: boolean };

/** A holder in words, as a lock message says it: `the job "mirror0"`, `a download in another tab`. */
export function describeLockHolder(holder: LockHolder): string {
  const words = holder.kind === 'job' ? `the job "${holder.id}"` : holder.words;
  return holder.elsewhere ? `${words} in another tab` : words;
}

/** A holder given in words is a named one. */
export function lockHolder(holder: string | LockHolder): LockHolder {
  return typeof holder === 'string' ? { kind: 'named', words: holder } : holder;
}

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
    /** Who holds it: words (`diskmirror (pid 42)`, `a download`) or a job. */
    by: string | LockHolder,
    readonly refused?: { permission: string; shared: boolean },
  ) {
    const holder = lockHolder(by);
    super(image, lockMessage(image, mode, describeLockHolder(holder), refused));
    this.by = holder;
  }

  /** Who holds it, as data. */
  readonly by: LockHolder;

  /** Who holds it, in words: `diskmirror (pid 42)`, `the job "mirror0"`. */
  get holder(): string {
    return describeLockHolder(this.by);
  }
}

/** What somebody holding a permission does to the image, for a refusal's words. */
const HOLDING: Record<string, string> = { write: 'is being written', 'consistent read': 'is being read', resize: 'may be resized' };

function lockMessage(image: string, mode: LockMode, holder: string, refused?: { permission: string; shared: boolean }): string {
  if (!refused) refused = { permission: 'write', shared: mode === 'shared' };
  const doing = refused.shared ? (HOLDING[refused.permission] ?? 'is in use') : 'is in use';
  return `Failed to get ${refused.shared ? 'shared ' : ''}"${refused.permission}" lock: ${image} ${doing} by ${holder}`;
}

/** A format or image could not be opened or is corrupt: names the field and the value. */
export class FormatError extends Error {
  override name = 'FormatError';
  constructor(
    message: string,
    /** The field at fault, when there is one. */
    readonly field?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An option with a bad value. */
export class OptionError extends Error {
  override name = 'OptionError';
}

/** QMP's error classes, as a command's refusal carries them. */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound';

/** A refused command, with QMP's error class. */
export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly qmpClass: QmpErrorClass,
    message: string,
  ) {
    super(message);
  }
}
