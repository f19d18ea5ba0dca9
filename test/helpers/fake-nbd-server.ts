/**
 * An NBD server in this process, over memory, on a local TCP port: the
 * fixed newstyle handshake (structured replies, base:allocation, NBD_OPT_GO
 * with the block sizes it is told to announce), then READ, WRITE, FLUSH,
 * WRITE_ZEROES and BLOCK_STATUS. Replies wait for the next turn of the
 * event loop, so a client that sends without bound is seen doing it: the
 * server counts the requests it holds unanswered at once. `answerRead` lets
 * a test answer reads as a misbehaving server would.
 */
import { createServer, type Server, type Socket } from 'node:net';

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const OPT_GO = 7;
const OPT_STRUCTURED_REPLY = 8;
const OPT_SET_META_CONTEXT = 10;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_META_CONTEXT = 4;
const REP_ERR_UNSUP = 0x80000001;
/** HAS_FLAGS | SEND_FLUSH | SEND_WRITE_ZEROES. */
const EXPORT_FLAGS = 1 | 4 | 64;
const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, WRITE_ZEROES: 6, BLOCK_STATUS: 7 };
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5 };
const ALLOCATION_CONTEXT = 1;

export interface ReadRequest {
  cookie: bigint;
  offset: number;
  length: number;
}

/** Encodes the server's answers; handed to `answerRead`. */
export interface Replies {
  /** A structured chunk (DONE when `done`). */
  chunk(cookie: bigint, type: number, payload: Uint8Array, done: boolean): void;
  /** A data chunk carrying the export's bytes [offset, offset + length). */
  data(cookie: bigint, offset: number, length: number, done: boolean): void;
}

export interface FakeNbdOptions {
  size: number;
  blockSizes?: { min: number; preferred: number; max: number };
  /** Answers each READ (structured replies only); default: one data chunk. */
  answerRead?: (request: ReadRequest, replies: Replies) => void;
}

export interface FakeNbdServer {
  port: number;
  /** The export's bytes. */
  data: Uint8Array;
  /** The most requests the server held unanswered at once, on any one connection. */
  maxInFlight: number;
  /** Requests received, by command number. */
  counts: Map<number, number>;
  close(): Promise<void>;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** Starts a server on 127.0.0.1, port chosen by the system. */
export async function fakeNbdServer(options: FakeNbdOptions): Promise<FakeNbdServer> {
  const sockets = new Set<Socket>();
  const state: FakeNbdServer = {
    port: 0,
    data: new Uint8Array(options.size),
    maxInFlight: 0,
    counts: new Map(),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    serve(socket, options, state);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as { port: number }).port;
  return state;
}

function serve(socket: Socket, options: FakeNbdOptions, state: FakeNbdServer): void {
  let buffered: Buffer = Buffer.alloc(0);
  let handshaking = true;
  let gotClientFlags = false;
  let structured = false;
  let inFlight = 0;
  let out: Buffer[] = [];
  let answered: ReadRequest[] = [];
  let scheduled = false;

  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(3, 16);
  socket.write(greeting);

  const optionReply = (option: number, type: number, data: Buffer = Buffer.alloc(0)) => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    socket.write(Buffer.concat([h, data]));
  };

  const replies: Replies = {
    chunk(cookie, type, payload, done) {
      const h = Buffer.alloc(20);
      h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
      h.writeUInt16BE(done ? 1 : 0, 4);
      h.writeUInt16BE(type, 6);
      h.writeBigUInt64BE(cookie, 8);
      h.writeUInt32BE(payload.length, 16);
      out.push(h, Buffer.from(payload));
    },
    data(cookie, offset, length, done) {
      const payload = new Uint8Array(8 + length);
      new DataView(payload.buffer).setBigUint64(0, BigInt(offset));
      payload.set(state.data.subarray(offset, offset + length), 8);
      replies.chunk(cookie, REPLY_TYPE.OFFSET_DATA, payload, done);
    },
  };

  const simple = (cookie: bigint, error = 0, payload?: Uint8Array) => {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    h.writeBigUInt64BE(cookie, 8);
    out.push(h);
    if (payload) out.push(Buffer.from(payload));
  };

  // Replies go out on the next turn, all at once: what arrived meanwhile is held unanswered.
  const flushReplies = () => {
    scheduled = false;
    for (const r of answered) {
      if (options.answerRead) options.answerRead(r, replies);
      else if (structured) replies.data(r.cookie, r.offset, r.length, true);
      else simple(r.cookie, 0, state.data.subarray(r.offset, r.offset + r.length));
    }
    answered = [];
    inFlight = 0;
    if (out.length > 0) socket.write(Buffer.concat(out));
    out = [];
  };
  const later = () => {
    inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, inFlight);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flushReplies);
    }
  };

  const handshakeStep = (): boolean => {
    if (!gotClientFlags) {
      if (buffered.length < 4) return false;
      buffered = buffered.subarray(4);
      gotClientFlags = true;
    }
    if (buffered.length < 16) return false;
    const length = buffered.readUInt32BE(12);
    if (buffered.length < 16 + length) return false;
    const option = buffered.readUInt32BE(8);
    buffered = buffered.subarray(16 + length);
    if (option === OPT_STRUCTURED_REPLY) {
      structured = true;
      optionReply(option, REP_ACK);
    } else if (option === OPT_SET_META_CONTEXT) {
      optionReply(option, REP_META_CONTEXT, Buffer.concat([u32(ALLOCATION_CONTEXT), Buffer.from('base:allocation')]));
      optionReply(option, REP_ACK);
    } else if (option === OPT_GO) {
      const exportInfo = Buffer.alloc(12);
      exportInfo.writeUInt16BE(0, 0);
      exportInfo.writeBigUInt64BE(BigInt(options.size), 2);
      exportInfo.writeUInt16BE(EXPORT_FLAGS, 10);
      optionReply(option, REP_INFO, exportInfo);
      if (options.blockSizes) {
        const sizes = Buffer.alloc(14);
        sizes.writeUInt16BE(3, 0);
        sizes.writeUInt32BE(options.blockSizes.min, 2);
        sizes.writeUInt32BE(options.blockSizes.preferred, 6);
        sizes.writeUInt32BE(options.blockSizes.max, 10);
        optionReply(option, REP_INFO, sizes);
      }
      optionReply(option, REP_ACK);
      handshaking = false;
    } else {
      optionReply(option, REP_ERR_UNSUP);
    }
    return true;
  };

  const requestStep = (): boolean => {
    if (buffered.length < 28) return false;
    if (buffered.readUInt32BE(0) !== REQUEST_MAGIC) {
      socket.destroy();
      return false;
    }
    const type = buffered.readUInt16BE(6);
    const cookie = buffered.readBigUInt64BE(8);
    const offset = Number(buffered.readBigUInt64BE(16));
    const length = buffered.readUInt32BE(24);
    const payloadBytes = type === CMD.WRITE ? length : 0;
    if (buffered.length < 28 + payloadBytes) return false;
    state.counts.set(type, (state.counts.get(type) ?? 0) + 1);
    if (type === CMD.WRITE) state.data.set(buffered.subarray(28, 28 + length), offset);
    buffered = buffered.subarray(28 + payloadBytes);
    if (type === CMD.DISC) {
      socket.end();
      return false;
    }
    later();
    if (type === CMD.READ) {
      answered.push({ cookie, offset, length });
      return true;
    }
    if (type === CMD.WRITE_ZEROES) state.data.fill(0, offset, offset + length);
    if (type === CMD.BLOCK_STATUS && structured) {
      const payload = new Uint8Array(12);
      const v = new DataView(payload.buffer);
      v.setUint32(0, ALLOCATION_CONTEXT);
      v.setUint32(4, length);
      v.setUint32(8, 0);
      replies.chunk(cookie, REPLY_TYPE.BLOCK_STATUS, payload, true);
      return true;
    }
    simple(cookie);
    return true;
  };

  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    for (;;) {
      const progressed = handshaking ? handshakeStep() : requestStep();
      if (!progressed) break;
    }
  });
}
