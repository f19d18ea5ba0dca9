/**
 * Mirror options with QEMU's names, defaults and validation (blockdev-mirror).
 * User-facing spellings are QAPI's: `on-source-error`, `buf-size`...
 */
import { OptionError } from '../qapi/errors.js';
import { ERROR_POLICIES, type ErrorPolicy } from './error-policy.js';

export const SYNC_MODES = ['full', 'top', 'none'] as const;
export type SyncMode = (typeof SYNC_MODES)[number];
export const COPY_MODES = ['background', 'write-blocking'] as const;
export type CopyMode = (typeof COPY_MODES)[number];

export interface MirrorOptions {
  /** Job id; also the `device` in BLOCK_JOB_* events. */
  id?: string;
  sync: SyncMode;
  granularity?: number;
  'buf-size'?: number;
  speed?: number;
  'on-source-error'?: ErrorPolicy;
  'on-target-error'?: ErrorPolicy;
  'copy-mode'?: CopyMode;
  unmap?: boolean;
  'target-is-zero'?: boolean;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

export interface ResolvedOptions {
  id: string;
  sync: SyncMode;
  granularity: number;
  bufSize: number;
  speed: number;
  onSourceError: ErrorPolicy;
  onTargetError: ErrorPolicy;
  copyMode: CopyMode;
  unmap: boolean;
  targetIsZero: boolean;
  autoFinalize: boolean;
  autoDismiss: boolean;
}

export const MIN_GRANULARITY = 512;
export const MAX_GRANULARITY = 64 << 20;
export const DEFAULT_BUF_SIZE = 16 << 20;
/** The most buffer memory a job takes (its buffers exist from its start). */
export const MAX_BUF_SIZE = 512 << 20;
/** Most operations in flight at once (QEMU's MAX_IN_FLIGHT). */
export const MAX_IN_FLIGHT = 16;
/** The smallest per-operation byte limit (QEMU's MAX_IO_BYTES). */
export const MAX_IO_BYTES = 1 << 20;

/** An option with a bad value. */
export { OptionError };

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** QEMU's default: the target's cluster size clamped to 4 KiB..64 KiB; 64 KiB without clusters. */
export function defaultGranularity(targetClusterSize: number | undefined): number {
  if (!targetClusterSize) return 64 << 10;
  return Math.min(64 << 10, Math.max(4 << 10, targetClusterSize));
}

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new OptionError(`Parameter '${name}' does not accept value '${String(value)}' (expected ${allowed.join(', ')})`);
  }
  return value as T;
}

export function resolveOptions(
  options: MirrorOptions,
  context: { targetClusterSize?: number; targetIsZero: boolean },
): ResolvedOptions {
  const sync = oneOf('sync', options.sync, SYNC_MODES, 'full');
  if (options.sync === undefined) throw new OptionError("Parameter 'sync' is missing");
  let granularity = options.granularity ?? 0;
  if (options.granularity !== undefined) {
    if (!Number.isSafeInteger(granularity) || granularity < MIN_GRANULARITY || granularity > MAX_GRANULARITY) {
      throw new OptionError(`Parameter 'granularity' expects a value in range [512B, 64MB] (got ${options.granularity})`);
    }
    if (!isPowerOfTwo(granularity)) throw new OptionError(`Parameter 'granularity' expects a power of 2 (got ${granularity})`);
  } else {
    granularity = defaultGranularity(context.targetClusterSize);
  }
  const rawBuf = options['buf-size'] ?? DEFAULT_BUF_SIZE;
  if (!Number.isSafeInteger(rawBuf) || rawBuf < 0) {
    throw new OptionError(`Invalid parameter 'buf-size' (got ${rawBuf}; expected a non-negative integer)`);
  }
  // The buffers are made when the job starts (QEMU allocates them as it goes): a bound keeps that possible.
  if (rawBuf > MAX_BUF_SIZE) throw new OptionError(`Parameter 'buf-size' expects at most 512 MiB (got ${rawBuf})`);
  // buf-size 0 means the default; anything else is rounded up to the granularity.
  const bufSize = rawBuf === 0 ? DEFAULT_BUF_SIZE : Math.ceil(rawBuf / granularity) * granularity;
  const speed = options.speed ?? 0;
  if (!Number.isSafeInteger(speed) || speed < 0) {
    throw new OptionError(`Parameter 'speed' expects a non-negative value (got ${speed})`);
  }
  const id = options.id ?? 'mirror';
  if (typeof id !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,127}$/.test(id)) {
    throw new OptionError(`Invalid job ID '${String(id)}' (a letter, then letters, digits, '-', '.' or '_')`);
  }
  return {
    id,
    sync,
    granularity,
    bufSize,
    speed,
    onSourceError: oneOf('on-source-error', options['on-source-error'], ERROR_POLICIES, 'report'),
    onTargetError: oneOf('on-target-error', options['on-target-error'], ERROR_POLICIES, 'report'),
    copyMode: oneOf('copy-mode', options['copy-mode'], ['background', 'write-blocking'] as const, 'background'),
    unmap: options.unmap ?? true,
    targetIsZero: options['target-is-zero'] ?? context.targetIsZero,
    autoFinalize: options['auto-finalize'] ?? true,
    autoDismiss: options['auto-dismiss'] ?? true,
  };
}

/** Bytes per operation and buffers in the pool, from buf-size (as QEMU sizes them). */
export function ioLimits(granularity: number, bufSize: number): { opBytes: number; nbBuffers: number } {
  const perOp = Math.min(bufSize, Math.max(Math.floor(bufSize / MAX_IN_FLIGHT), MAX_IO_BYTES));
  const opBytes = Math.max(granularity, Math.floor(perOp / granularity) * granularity);
  const nbBuffers = Math.max(1, Math.min(MAX_IN_FLIGHT, Math.floor(bufSize / opBytes)));
  return { opBytes, nbBuffers };
}

/**
 * The options a resumed job is given again: what it started with, as
 * MirrorOptions. What its target holds is not known, so it is not taken as
 * zero (zeroes are written where it does not read as zero already).
 */
export function givenOptions(o: ResolvedOptions, changes: { speed?: number } = {}): MirrorOptions {
  return {
    id: o.id,
    sync: o.sync,
    granularity: o.granularity,
    'buf-size': o.bufSize,
    speed: changes.speed ?? o.speed,
    'on-source-error': o.onSourceError,
    'on-target-error': o.onTargetError,
    'copy-mode': o.copyMode,
    unmap: o.unmap,
    'target-is-zero': false,
  };
}
