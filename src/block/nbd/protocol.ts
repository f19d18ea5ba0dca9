/**
 * The NBD protocol's numbers, as the specification names them
 * (github.com/NetworkBlockDevice/nbd, doc/proto.md), and small pure helpers
 * that encode a client's messages and classify a server's.
 *
 * A connection has two phases. The handshake (fixed newstyle): the server
 * greets with NBDMAGIC IHAVEOPT and its flags, the client answers with its
 * flags, then sends options (IHAVEOPT, option, length, data) each answered
 * by replies (REPLY_MAGIC, option, type, length, data) until NBD_OPT_GO
 * ends it. Transmission: requests (REQUEST_MAGIC, flags, type, cookie,
 * offset, length, [data]) answered, in any order, by simple replies
 * (SIMPLE_REPLY_MAGIC, error, cookie, [data]) or, once negotiated,
 * structured reply chunks (STRUCTURED_REPLY_MAGIC, flags, type, cookie,
 * length, payload), the last one flagged DONE. All numbers are big-endian.
 */
import type { Errno } from '../block-device.js';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** The server's handshake flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
/** The client's. */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
} as const;
/** Option replies with this bit set are errors. */
export const REP_FLAG_ERROR = 0x80000000;
const REP_ERRORS: Record<number, string> = {
  1: 'the server does not know this option (NBD_REP_ERR_UNSUP)',
  2: 'the server forbids it (NBD_REP_ERR_POLICY)',
  3: 'the server calls the request invalid (NBD_REP_ERR_INVALID)',
  4: 'the server cannot do it on its platform (NBD_REP_ERR_PLATFORM)',
  5: 'the server requires TLS (NBD_REP_ERR_TLS_REQD), which diskmirror does not speak',
  6: 'no such export (NBD_REP_ERR_UNKNOWN)',
  7: 'the server is shutting down (NBD_REP_ERR_SHUTDOWN)',
  8: 'the server requires block size negotiation (NBD_REP_ERR_BLOCK_SIZE_REQD)',
  9: 'the request is too big (NBD_REP_ERR_TOO_BIG)',
  10: 'the server requires extended headers (NBD_REP_ERR_EXT_HEADER_REQD)',
};

/** An option error reply in words. */
export function describeOptionError(type: number): string {
  return REP_ERRORS[type & ~REP_FLAG_ERROR] ?? `the server refused it (error reply ${type >>> 0})`;
}

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags, about the export. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export type CommandType = (typeof CMD)[keyof typeof CMD];

/** Command flags. */
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;
export function isErrorReplyType(type: number): boolean {
  return (type & (1 << 15)) !== 0;
}

/** base:allocation's flags for an extent. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = 'base:allocation';

/** The protocol's error numbers (Linux's values) as this project's codes. */
const NBD_ERRNO: Record<number, Errno> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EINVAL', // EOVERFLOW: a request past what the server accepts
  95: 'ENOTSUP',
  108: 'EIO', // ESHUTDOWN: the server is going away; the next request reconnects
};
export function errnoOf(nbdError: number): Errno {
  return NBD_ERRNO[nbdError] ?? 'EIO';
}
export function nbdErrorName(nbdError: number): string {
  const names: Record<number, string> = { 1: 'NBD_EPERM', 5: 'NBD_EIO', 12: 'NBD_ENOMEM', 22: 'NBD_EINVAL', 28: 'NBD_ENOSPC', 75: 'NBD_EOVERFLOW', 95: 'NBD_ENOTSUP', 108: 'NBD_ESHUTDOWN' };
  return names[nbdError] ?? `NBD error ${nbdError}`;
}

/** Defaults the specification gives a client when the server states no block sizes. */
export const DEFAULT_MIN_BLOCK = 1;
export const DEFAULT_PREFERRED_BLOCK = 4096;
export const DEFAULT_MAX_PAYLOAD = 32 << 20;
/** Longest request length the 32-bit field can carry. */
export const MAX_LENGTH = 0xffffffff;

const encoder = new TextEncoder();

/** An option as the client sends it. */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  out.set(data, 16);
  return out;
}

/** NBD_OPT_GO / NBD_OPT_INFO's data: the export name and the information asked for. */
export function encodeGoData(exportName: string, infos: number[]): Uint8Array {
  const name = encoder.encode(exportName);
  const out = new Uint8Array(4 + name.length + 2 + 2 * infos.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, name.length);
  out.set(name, 4);
  view.setUint16(4 + name.length, infos.length);
  infos.forEach((info, i) => view.setUint16(6 + name.length + 2 * i, info));
  return out;
}

/** NBD_OPT_SET_META_CONTEXT's data: the export name and the contexts asked for. */
export function encodeMetaContextData(exportName: string, queries: string[]): Uint8Array {
  const name = encoder.encode(exportName);
  const encoded = queries.map((q) => encoder.encode(q));
  const out = new Uint8Array(4 + name.length + 4 + encoded.reduce((n, q) => n + 4 + q.length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, name.length);
  out.set(name, 4);
  let at = 4 + name.length;
  view.setUint32(at, encoded.length);
  at += 4;
  for (const q of encoded) {
    view.setUint32(at, q.length);
    out.set(q, at + 4);
    at += 4 + q.length;
  }
  return out;
}

/** A request's 28-byte header. */
export function encodeRequest(flags: number, type: CommandType, cookie: number, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(28);
  const view = new DataView(out.buffer);
  view.setUint32(0, REQUEST_MAGIC);
  view.setUint16(4, flags);
  view.setUint16(6, type);
  // Cookies are counters well inside 2^53: the high word, then the low one.
  view.setUint32(8, Math.floor(cookie / 2 ** 32));
  view.setUint32(12, cookie >>> 0);
  // Offsets are safe integers: the high word, then the low one (no BigInt on a path taken per request).
  view.setUint32(16, Math.floor(offset / 2 ** 32));
  view.setUint32(20, offset >>> 0);
  view.setUint32(24, length);
  return out;
}

/** Reads a 64-bit cookie written by encodeRequest. */
export function readCookie(view: DataView, at: number): number {
  return view.getUint32(at) * 2 ** 32 + view.getUint32(at + 4);
}

/** A 64-bit field as a safe integer, or null when it is not one. */
export function readSafe64(view: DataView, at: number): number | null {
  const value = view.getBigUint64(at);
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : null;
}

export const COMMAND_NAMES: Record<CommandType, string> = {
  0: 'NBD_CMD_READ',
  1: 'NBD_CMD_WRITE',
  2: 'NBD_CMD_DISC',
  3: 'NBD_CMD_FLUSH',
  4: 'NBD_CMD_TRIM',
  5: 'NBD_CMD_CACHE',
  6: 'NBD_CMD_WRITE_ZEROES',
  7: 'NBD_CMD_BLOCK_STATUS',
};
