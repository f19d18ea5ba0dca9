/**
 * Errors keep their identity across the worker boundary. Comlink's default
 * "throw" handler keeps only name, message and stack; this one also carries
 * the fields our error classes have (code, op, offset, bytes, field,
 * qmpClass; image, mode, and the holder as data for image conflicts; the worker's own
 * codes) and rebuilds the class on the other side, so the page checks an
 * error's class and code, never its words. Installed by both the worker and
 * the page.
 */
import * as Comlink from 'comlink';
import {
  type BlockOp,
  type Errno,
  type LockHolder,
  type LockMode,
  type QmpErrorClass,
  BlockError,
  CommandError,
  FormatError,
  ImageConflictError,
  LockError,
  OptionError,
} from '../qapi/errors.js';
import { JobError } from '../qapi/job-states.js';
import { WorkerError, type WorkerErrorCode } from './worker-error.js';

interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** An Errno (BlockError, image conflicts) or a WorkerErrorCode. */
  code?: string;
  op?: BlockOp;
  offset?: number;
  bytes?: number;
  detail?: string;
  field?: string;
  qmpClass?: string;
  image?: string;
  mode?: LockMode;
  /** A lock's holder, as data. */
  by?: LockHolder;
  httpStatus?: number;
}

type Serialized = { isError: true; value: SerializedError } | { isError: false; value: unknown };

export function serializeError(err: Error): SerializedError {
  const e = err as Error & Partial<SerializedError>;
  const out: SerializedError = { name: e.name, message: e.message };
  if (e.stack) out.stack = e.stack;
  for (const key of ['code', 'op', 'offset', 'bytes', 'detail', 'field', 'qmpClass', 'image', 'mode', 'httpStatus'] as const) {
    const v = e[key];
    if (typeof v === 'string' || typeof v === 'number') (out as unknown as Record<string, unknown>)[key] = v;
  }
  if (err instanceof LockError) out.by = { ...err.by };
  return out;
}

export function deserializeError(s: SerializedError): Error {
  let err: Error;
  switch (s.name) {
    case 'BlockError':
      err = new BlockError((s.code as Errno | undefined) ?? 'EIO', s.op ?? 'read', s.offset ?? 0, s.bytes ?? 0, s.detail ?? s.message, s.httpStatus !== undefined ? { httpStatus: s.httpStatus } : {});
      break;
    case 'FormatError':
      err = new FormatError(s.message, s.field);
      break;
    case 'JobError':
      err = new JobError(s.message, (s.qmpClass as JobError['qmpClass']) ?? 'GenericError');
      break;
    case 'CommandError':
      err = new CommandError((s.qmpClass as QmpErrorClass) ?? 'GenericError', s.message);
      break;
    case 'LockError':
      err = new LockError(s.image ?? '', s.mode === 'shared' ? 'shared' : 'exclusive', s.by ?? 'another tab');
      // The message is made from the fields; should they ever differ, the sender's words win.
      if (err.message !== s.message) err.message = s.message;
      break;
    case 'ImageConflictError':
      err = new ImageConflictError(s.image ?? '', s.message, s.code === 'EEXIST' ? { code: 'EEXIST' } : {});
      break;
    case 'OptionError':
      err = new OptionError(s.message);
      break;
    case 'WorkerError':
      err = new WorkerError(s.code as WorkerErrorCode, s.message);
      break;
    default:
      err = Object.assign(new Error(s.message), { name: s.name });
      if (s.code) Object.assign(err, { code: s.code });
  }
  if (s.stack) err.stack = s.stack;
  return err;
}

let installed = false;

export function installErrorTransfer(): void {
  if (installed) return;
  installed = true;
  const base = Comlink.transferHandlers.get('throw')!;
  Comlink.transferHandlers.set('throw', {
    canHandle: base.canHandle,
    serialize(wrapper: unknown): [Serialized, Transferable[]] {
      const value = (wrapper as { value: unknown }).value;
      if (value instanceof Error) return [{ isError: true, value: serializeError(value) }, []];
      return [{ isError: false, value }, []];
    },
    deserialize(serialized: unknown): never {
      const s = serialized as Serialized;
      if (s.isError) throw deserializeError(s.value);
      throw s.value;
    },
  } as Comlink.TransferHandler<unknown, Serialized>);
}
