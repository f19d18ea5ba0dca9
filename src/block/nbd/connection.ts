/**
 * One NBD connection: the fixed newstyle handshake (structured replies, the
 * base:allocation context, NBD_OPT_GO with the export's block sizes, and
 * NBD_OPT_EXPORT_NAME for a server without GO), then requests, several in
 * flight, each matched to its replies by cookie.
 *
 * A server is not trusted: every length it sends is bounded before anything
 * is allocated for it, every reply must match a request in flight and stay
 * inside it, and anything else ends the connection (the requests in flight
 * then fail with EIO; the device above reconnects).
 */
import type { Errno } from '../block-device.js';
import {
  BASE_ALLOCATION,
  CMD,
  COMMAND_NAMES,
  type CommandType,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_MIN_BLOCK,
  DEFAULT_PREFERRED_BLOCK,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBDMAGIC,
  OPT,
  REP,
  REPLY_FLAG_DONE,
  REPLY_MAGIC,
  REPLY_TYPE,
  REP_FLAG_ERROR,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TFLAG,
  describeOptionError,
  encodeGoData,
  encodeMetaContextData,
  encodeOption,
  encodeRequest,
  errnoOf,
  isErrorReplyType,
  nbdErrorName,
  readCookie,
  readSafe64,
} from './protocol.js';
import { ReadCoverage } from './coverage.js';
import type { NbdTransport } from './transport.js';

/** What the handshake learnt about the export. */
export interface ExportInfo {
  size: number;
  /** Transmission flags (TFLAG). */
  flags: number;
  /** Requests' offsets and lengths are multiples of this. */
  minBlock: number;
  preferredBlock: number;
  /** Most bytes a READ or WRITE may carry. */
  maxPayload: number;
  structured: boolean;
  /** The id of base:allocation, or null when the server has none. */
  allocationContext: number | null;
}

/** A failure the server reported for one request, or the connection's end. */
export class NbdRequestError extends Error {
  override name = 'NbdRequestError';
  constructor(
    readonly code: Errno,
    message: string,
    /** True when the connection is gone (the request may not have reached the server). */
    readonly lost = false,
  ) {
    super(message);
  }
}

/** A failed handshake (no such export, TLS required, not an NBD server...). */
export class NbdHandshakeError extends Error {
  override name = 'NbdHandshakeError';
  constructor(
    readonly code: Errno,
    message: string,
  ) {
    super(message);
  }
}

/** Option replies larger than this end the handshake: no real reply comes close. */
const MAX_OPTION_REPLY = 1 << 20;
/** A BLOCK_STATUS reply's payload bound (a REQ_ONE request needs 16 bytes). */
const MAX_STATUS_PAYLOAD = 1 << 20;
/** An error chunk's payload bound (its message is at most 4 KiB by the specification). */
const MAX_ERROR_PAYLOAD = 64 << 10;

/**
 * Requests in flight on one connection at most (QEMU's MAX_NBD_REQUESTS);
 * more wait their turn, so what a caller sends is bounded whatever the
 * server's block sizes make of it.
 */
export const MAX_REQUESTS_IN_FLIGHT = 16;

const decoder = new TextDecoder();

export interface Extent {
  bytes: number;
  /** base:allocation flags (STATE_HOLE, STATE_ZERO). */
  flags: number;
}

interface Pending {
  type: CommandType;
  offset: number;
  length: number;
  /** A READ's destination. */
  into?: Uint8Array;
  extents?: Extent[];
  /** A READ's bytes answered so far (data and holes). */
  coverage?: ReadCoverage;
  error?: NbdRequestError;
  resolve(): void;
  reject(err: NbdRequestError): void;
}

export class NbdConnection {
  private readonly pending = new Map<number, Pending>();
  /** Slots taken (requests in flight, or about to be sent); at most MAX_REQUESTS_IN_FLIGHT. */
  private slots = 0;
  /** Requests waiting for a slot, first come first served. */
  private readonly waiting: { resolve: () => void; reject: (err: NbdRequestError) => void }[] = [];
  private nextCookie = 1;
  private lostWith: NbdRequestError | null = null;
  private lastHeard = 0;
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  /** Called once when the connection ends by itself (a drop, a protocol error, a silent server). */
  onLost: ((err: NbdRequestError) => void) | null = null;

  private constructor(
    private readonly transport: NbdTransport,
    readonly info: ExportInfo,
    private readonly idleTimeoutMs: number,
  ) {
    transport.incoming.onArrival = () => (this.lastHeard = Date.now());
    void this.receive();
  }

  /** Negotiates `exportName` over a new transport; closes it on failure. */
  static async open(transport: NbdTransport, exportName: string, options: { idleTimeoutMs: number }): Promise<NbdConnection> {
    // A server that says nothing (qemu-nbd serves one client at a time: another may be connected) fails the open.
    let silent = false;
    const timer =
      options.idleTimeoutMs > 0
        ? setTimeout(() => {
            silent = true;
            transport.incoming.end(new Error('no answer'));
          }, options.idleTimeoutMs)
        : null;
    try {
      const info = await handshake(transport, exportName);
      return new NbdConnection(transport, info, options.idleTimeoutMs);
    } catch (err) {
      transport.close();
      if (silent) {
        throw new NbdHandshakeError(
          'ETIMEDOUT',
          `${transport.peer}: the server did not finish the handshake in ${options.idleTimeoutMs / 1000} s (a server that takes one client at a time, like qemu-nbd without -e, may be serving another)`,
        );
      }
      if (err instanceof NbdHandshakeError) throw err;
      // The stream ended or failed during the handshake.
      throw new NbdHandshakeError('EIO', `${transport.peer}: the connection ended during the handshake (${(err as Error).message})`);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** Where the connection arrived, however its address was spelt (see NbdTransport.endpoint). */
  get endpoint(): string | undefined {
    return this.transport.endpoint;
  }

  get lost(): boolean {
    return this.lostWith !== null;
  }

  /** Bytes received on this connection. */
  get received(): number {
    return this.transport.incoming.received;
  }

  /**
   * Sends one request and waits for its last reply. A READ fills `into`; a
   * BLOCK_STATUS resolves with the extents of base:allocation. With
   * MAX_REQUESTS_IN_FLIGHT requests in flight, it waits for one to settle
   * before it sends.
   */
  async request(type: CommandType, flags: number, offset: number, length: number, payload?: { data?: Uint8Array; into?: Uint8Array }): Promise<Extent[] | undefined> {
    if (this.lostWith) throw this.lostWith;
    if (this.slots < MAX_REQUESTS_IN_FLIGHT) this.slots++;
    else await new Promise<void>((resolve, reject) => this.waiting.push({ resolve, reject }));
    // The slot may have come just before the connection ended.
    if (this.lostWith) throw this.lostWith;
    const cookie = this.nextCookie++;
    return new Promise((resolve, reject) => {
      const pending: Pending = {
        type,
        offset,
        length,
        ...(payload?.into ? { into: payload.into, coverage: new ReadCoverage(length) } : {}),
        resolve: () => resolve(pending.extents),
        reject,
      };
      if (type === CMD.BLOCK_STATUS) pending.extents = [];
      if (this.pending.size === 0) this.lastHeard = Date.now();
      this.pending.set(cookie, pending);
      this.armIdle();
      this.transport.send(concat(encodeRequest(flags, type, cookie, offset, length), payload?.data));
    });
  }

  /** A request settled: its slot goes to the next one waiting. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next.resolve();
    else this.slots--;
  }

  /** Says goodbye (NBD_CMD_DISC) and closes; requests still in flight fail. */
  close(): void {
    if (!this.lostWith) {
      this.transport.send(encodeRequest(0, CMD.DISC, 0, 0, 0));
      this.end(new NbdRequestError('ECANCELED', `${this.transport.peer}: the connection was closed`, true), false);
    }
    this.transport.close();
  }

  private end(err: NbdRequestError, tell = true): void {
    if (this.lostWith) return;
    this.lostWith = err;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.transport.incoming.end(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.waiting.splice(0)) w.reject(err);
    this.transport.close();
    if (tell) this.onLost?.(err);
  }

  /** A server silent for idleTimeoutMs while requests wait ends the connection (ETIMEDOUT). */
  private armIdle(): void {
    if (this.idleTimer || this.idleTimeoutMs <= 0) return;
    const check = () => {
      this.idleTimer = null;
      if (this.pending.size === 0 || this.lostWith) return;
      const silent = Date.now() - this.lastHeard;
      if (silent >= this.idleTimeoutMs) {
        this.end(new NbdRequestError('ETIMEDOUT', `${this.transport.peer}: the server sent nothing for ${this.idleTimeoutMs / 1000} s`, true));
        return;
      }
      this.idleTimer = setTimeout(check, this.idleTimeoutMs - silent);
    };
    this.idleTimer = setTimeout(check, this.idleTimeoutMs);
  }

  private protocolError(detail: string): never {
    const err = new NbdRequestError('EIO', `${this.transport.peer}: the server broke the protocol (${detail})`, true);
    this.end(err);
    throw err;
  }

  private async receive(): Promise<void> {
    const q = this.transport.incoming;
    try {
      for (;;) {
        const head = view(q.takeNow(4) ?? (await q.take(4)));
        const magic = head.getUint32(0);
        if (magic === SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else if (magic === STRUCTURED_REPLY_MAGIC && this.info.structured) await this.structuredChunk();
        else this.protocolError(`reply magic 0x${magic.toString(16)}`);
      }
    } catch (err) {
      if (this.lostWith) return;
      const why = (err as Error).message;
      this.end(new NbdRequestError('EIO', `${this.transport.peer}: the connection was lost (${why})`, true));
    }
  }

  private take(cookie: number): Pending {
    const p = this.pending.get(cookie);
    if (!p) this.protocolError(`a reply for cookie ${cookie}, which no request in flight has`);
    return p;
  }

  private async simpleReply(): Promise<void> {
    const q = this.transport.incoming;
    const h = view(q.takeNow(12) ?? (await q.take(12)));
    const error = h.getUint32(0);
    const cookie = readCookie(h, 4);
    const p = this.take(cookie);
    if (error !== 0) {
      this.settle(cookie, p, this.serverError(p, error, ''));
      return;
    }
    if (p.type === CMD.READ && !q.fillNow(p.into!)) await q.fill(p.into!);
    else if (p.type === CMD.BLOCK_STATUS) this.protocolError('a simple reply to NBD_CMD_BLOCK_STATUS');
    this.settle(cookie, p);
  }

  private async structuredChunk(): Promise<void> {
    const q = this.transport.incoming;
    const h = view(q.takeNow(16) ?? (await q.take(16)));
    const flags = h.getUint16(0);
    const type = h.getUint16(2);
    const cookie = readCookie(h, 4);
    const length = h.getUint32(12);
    const p = this.take(cookie);
    if (isErrorReplyType(type)) {
      if (length < 6 || length > MAX_ERROR_PAYLOAD) this.protocolError(`an error chunk of ${length} bytes`);
      const body = view(await q.take(length));
      const error = body.getUint32(0);
      const messageBytes = body.getUint16(4);
      if (6 + messageBytes > length) this.protocolError(`an error message of ${messageBytes} bytes in a ${length}-byte chunk`);
      const message = decoder.decode(new Uint8Array(body.buffer, body.byteOffset + 6, messageBytes));
      p.error ??= this.serverError(p, error === 0 ? 5 : error, message);
    } else if (type === REPLY_TYPE.NONE) {
      if (length !== 0) this.protocolError(`NBD_REPLY_TYPE_NONE with ${length} bytes`);
    } else if (type === REPLY_TYPE.OFFSET_DATA && p.type === CMD.READ) {
      if (length < 8) this.protocolError(`a data chunk of ${length} bytes`);
      const at = readSafe64(view(q.takeNow(8) ?? (await q.take(8))), 0);
      const bytes = length - 8;
      if (at === null || at < p.offset || at + bytes > p.offset + p.length) this.protocolError(`data at ${at} (+${bytes}) outside the read of ${p.length} bytes at ${p.offset}`);
      if (!p.coverage!.add(at - p.offset, bytes)) this.protocolError(`data at ${at} (+${bytes}) overlapping what an earlier chunk of the read at ${p.offset} answered`);
      const into = p.into!.subarray(at - p.offset, at - p.offset + bytes);
      if (!q.fillNow(into)) await q.fill(into);
    } else if (type === REPLY_TYPE.OFFSET_HOLE && p.type === CMD.READ) {
      if (length !== 12) this.protocolError(`a hole chunk of ${length} bytes`);
      const body = view(q.takeNow(12) ?? (await q.take(12)));
      const at = readSafe64(body, 0);
      const bytes = body.getUint32(8);
      if (at === null || at < p.offset || at + bytes > p.offset + p.length) this.protocolError(`a hole at ${at} (+${bytes}) outside the read of ${p.length} bytes at ${p.offset}`);
      if (!p.coverage!.add(at - p.offset, bytes)) this.protocolError(`a hole at ${at} (+${bytes}) overlapping what an earlier chunk of the read at ${p.offset} answered`);
      p.into!.fill(0, at - p.offset, at - p.offset + bytes);
    } else if (type === REPLY_TYPE.BLOCK_STATUS && p.type === CMD.BLOCK_STATUS) {
      if (length < 12 || (length - 4) % 8 !== 0 || length > MAX_STATUS_PAYLOAD) this.protocolError(`a block status chunk of ${length} bytes`);
      const body = view(await q.take(length));
      // Only the context asked for is kept; a server may not send others (we asked for one).
      if (body.getUint32(0) === this.info.allocationContext) {
        for (let at = 4; at < length; at += 8) {
          const bytes = body.getUint32(at);
          if (bytes === 0) this.protocolError('a block status extent of 0 bytes');
          p.extents!.push({ bytes, flags: body.getUint32(at + 4) });
        }
      }
    } else {
      this.protocolError(`reply chunk type ${type} to ${COMMAND_NAMES[p.type]}`);
    }
    if (flags & REPLY_FLAG_DONE) {
      // A successful read answers every byte, each once; a server that leaves some out would hand back stale memory.
      if (!p.error && p.coverage && !p.coverage.whole) this.protocolError(`a read of ${p.length} bytes answered with ${p.coverage.covered}`);
      this.settle(cookie, p, p.error);
    }
  }

  private serverError(p: Pending, nbdError: number, message: string): NbdRequestError {
    const code = errnoOf(nbdError);
    return new NbdRequestError(code, `${this.transport.peer}: the server failed ${COMMAND_NAMES[p.type]} with ${nbdErrorName(nbdError)}${message ? `: ${message}` : ''}`);
  }

  private settle(cookie: number, p: Pending, error?: NbdRequestError): void {
    this.pending.delete(cookie);
    this.release();
    if (error) p.reject(error);
    else p.resolve();
  }
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function concat(head: Uint8Array, data?: Uint8Array): Uint8Array {
  if (!data || data.length === 0) return head;
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  out.set(data, head.length);
  return out;
}

// ---- the handshake -------------------------------------------------------------------

interface OptionReply {
  type: number;
  data: Uint8Array;
}

async function readOptionReply(t: NbdTransport, option: number): Promise<OptionReply> {
  const h = view(await t.incoming.take(20));
  if (h.getBigUint64(0) !== REPLY_MAGIC) throw new NbdHandshakeError('EIO', `${t.peer}: not an NBD option reply (magic 0x${h.getBigUint64(0).toString(16)})`);
  const replyOption = h.getUint32(8);
  const type = h.getUint32(12);
  const length = h.getUint32(16);
  if (replyOption !== option) throw new NbdHandshakeError('EIO', `${t.peer}: a reply to option ${replyOption} where ${option} was asked`);
  if (length > MAX_OPTION_REPLY) throw new NbdHandshakeError('EIO', `${t.peer}: an option reply of ${length} bytes`);
  return { type, data: length > 0 ? (await t.incoming.take(length)).slice() : new Uint8Array(0) };
}

function optionFailure(t: NbdTransport, what: string, reply: OptionReply, exportName: string): NbdHandshakeError {
  const text = reply.data.length > 0 ? `: ${decoder.decode(reply.data)}` : '';
  const kind = reply.type & ~REP_FLAG_ERROR;
  const code: Errno = kind === 6 ? 'ENOENT' : kind === 2 ? 'EACCES' : kind === 5 || kind === 1 ? 'ENOTSUP' : 'EIO';
  const subject = kind === 6 ? `export "${exportName}"` : what;
  return new NbdHandshakeError(code, `${t.peer}: ${subject}: ${describeOptionError(reply.type)}${text}`);
}

async function handshake(t: NbdTransport, exportName: string): Promise<ExportInfo> {
  const greeting = view(await t.incoming.take(18));
  if (greeting.getBigUint64(0) !== NBDMAGIC) throw new NbdHandshakeError('EIO', `${t.peer}: not an NBD server (no NBDMAGIC greeting)`);
  if (greeting.getBigUint64(8) !== IHAVEOPT) throw new NbdHandshakeError('ENOTSUP', `${t.peer}: the server speaks only oldstyle negotiation, which has no export names`);
  const serverFlags = greeting.getUint16(16);
  if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new NbdHandshakeError('ENOTSUP', `${t.peer}: the server does not speak fixed newstyle negotiation`);
  const noZeroes = (serverFlags & FLAG_NO_ZEROES) !== 0;
  const clientFlags = new Uint8Array(4);
  new DataView(clientFlags.buffer).setUint32(0, FLAG_C_FIXED_NEWSTYLE | (noZeroes ? FLAG_C_NO_ZEROES : 0));
  t.send(clientFlags);

  // Structured replies: reads may come as data and hole chunks, and block status needs them.
  t.send(encodeOption(OPT.STRUCTURED_REPLY));
  const structuredReply = await readOptionReply(t, OPT.STRUCTURED_REPLY);
  const structured = structuredReply.type === REP.ACK;

  let allocationContext: number | null = null;
  if (structured) {
    t.send(encodeOption(OPT.SET_META_CONTEXT, encodeMetaContextData(exportName, [BASE_ALLOCATION])));
    for (;;) {
      const reply = await readOptionReply(t, OPT.SET_META_CONTEXT);
      if (reply.type === REP.META_CONTEXT && reply.data.length >= 4) {
        const name = decoder.decode(reply.data.subarray(4));
        if (name === BASE_ALLOCATION) allocationContext = view(reply.data).getUint32(0);
        continue;
      }
      // ACK ends the list; an error (unknown export, unsupported) just means no block status.
      if (reply.type === REP.ACK || reply.type & REP_FLAG_ERROR) break;
    }
  }

  let size: number | null = null;
  let flags = 0;
  let minBlock = DEFAULT_MIN_BLOCK;
  let preferredBlock = DEFAULT_PREFERRED_BLOCK;
  let maxPayload = DEFAULT_MAX_PAYLOAD;
  t.send(encodeOption(OPT.GO, encodeGoData(exportName, [INFO.BLOCK_SIZE])));
  for (;;) {
    const reply = await readOptionReply(t, OPT.GO);
    if (reply.type === REP.INFO && reply.data.length >= 2) {
      const d = view(reply.data);
      const info = d.getUint16(0);
      if (info === INFO.EXPORT && reply.data.length >= 12) {
        size = readSafe64(d, 2);
        if (size === null) throw new NbdHandshakeError('EFBIG', `${t.peer}: the export's size is past 2^53 bytes`);
        flags = d.getUint16(10);
      } else if (info === INFO.BLOCK_SIZE && reply.data.length >= 14) {
        minBlock = d.getUint32(2);
        preferredBlock = d.getUint32(6);
        maxPayload = d.getUint32(10);
      }
      continue;
    }
    if (reply.type === REP.ACK) break;
    if (reply.type === (REP_FLAG_ERROR | 1)) {
      // A server without NBD_OPT_GO: the old way, which ends the handshake without a reply.
      t.send(encodeOption(OPT.EXPORT_NAME, new TextEncoder().encode(exportName)));
      const d = view(await t.incoming.take(10).catch(() => {
        throw new NbdHandshakeError('ENOENT', `${t.peer}: export "${exportName}": the server closed the connection (no such export?)`);
      }));
      size = readSafe64(d, 0);
      if (size === null) throw new NbdHandshakeError('EFBIG', `${t.peer}: the export's size is past 2^53 bytes`);
      flags = d.getUint16(8);
      if (!noZeroes) await t.incoming.skip(124);
      // Structured replies were agreed before; the old way keeps them.
      break;
    }
    if (reply.type & REP_FLAG_ERROR) throw optionFailure(t, `NBD_OPT_GO`, reply, exportName);
    // Any other reply type is informational: skip it.
  }
  if (size === null) throw new NbdHandshakeError('EIO', `${t.peer}: the server gave no size for export "${exportName}"`);
  if (!isPowerOfTwo(minBlock) || minBlock > 65536 || !isPowerOfTwo(preferredBlock) || preferredBlock < minBlock || maxPayload < minBlock) {
    throw new NbdHandshakeError('EINVAL', `${t.peer}: block sizes that make no sense (minimum ${minBlock}, preferred ${preferredBlock}, maximum ${maxPayload})`);
  }
  if (!(flags & TFLAG.HAS_FLAGS)) flags = 0;
  // A client never sends more than 32 MiB in one request unless the server asks for more.
  maxPayload = Math.min(maxPayload, DEFAULT_MAX_PAYLOAD) - (Math.min(maxPayload, DEFAULT_MAX_PAYLOAD) % minBlock);
  return { size, flags, minBlock, preferredBlock, maxPayload, structured, allocationContext };
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}
