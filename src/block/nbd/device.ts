/**
 * A block device over an NBD export (a qemu-nbd or nbdkit server, directly
 * or through a WebSocket bridge).
 *
 * - Requests respect the server's block sizes: READ and WRITE are split at
 *   the maximum payload; a request not aligned to the minimum block size is
 *   widened (reads) or read, changed and written back (writes).
 * - Several requests are in flight on one connection, matched by cookie.
 * - Holes and zeroes come from NBD_CMD_BLOCK_STATUS (base:allocation), so a
 *   sparse export is never read where it is known to be zero; zeroes are
 *   written with NBD_CMD_WRITE_ZEROES (NO_HOLE unless unmapping is allowed).
 * - Errors map here: the server's NBD_EIO, NBD_ENOSPC, NBD_EPERM... become
 *   EIO, ENOSPC, EPERM...; a lost connection is EIO for the requests in
 *   flight, and the next request connects again (same export, same size),
 *   so a job paused by a `stop` policy continues on a new connection when
 *   resumed. What the server acknowledged and was not flushed when the
 *   connection was lost may be gone with it (a server that restarted):
 *   watchDurability tells.
 * - `writeThrough`: every write carries FUA (the data is durable when the
 *   request completes), for callers that cannot rely on a later flush.
 */
import { type BlockDevice, type BlockOp, type DurabilityNotice, type Errno, type FileIdentity, BlockError, checkDeviceRequest, closedError, readOnlyError } from '../block-device.js';
import { DurabilityWatch } from '../durability.js';
import { type ExportInfo, type Extent, MAX_REQUESTS_IN_FLIGHT, NbdConnection, NbdHandshakeError, NbdRequestError } from './connection.js';
import { CMD, CMD_FLAG, type CommandType, MAX_LENGTH, STATE_ZERO, TFLAG } from './protocol.js';
import type { Connect } from './transport.js';

export interface NbdDeviceOptions {
  connect: Connect;
  exportName: string;
  /** The export as the person named it (a URI), for messages. */
  name: string;
  /** What identifies the export when the transport cannot say where it arrived: the same key is the same export. */
  key: string;
  readOnly: boolean;
  /** FUA on every write. */
  writeThrough?: boolean;
  /** Called once the device is closed. */
  onClosed?: () => void;
  /** Requests waiting this long without a byte from the server end the connection (ETIMEDOUT); default 30 s, 0 for never. */
  idleTimeoutMs?: number;
}

export const DEFAULT_NBD_IDLE_TIMEOUT_MS = 30_000;
/** WRITE_ZEROES, TRIM and BLOCK_STATUS carry no payload: they may cover this much in one request. */
const MAX_RANGE_REQUEST = 1 << 30;
/** Zeroes written as data (a server without WRITE_ZEROES) come from one buffer at most this long. */
const ZEROES_BUFFER = 1 << 20;

export class NbdDevice implements BlockDevice {
  private connection: NbdConnection | null;
  private connecting: Promise<NbdConnection> | null = null;
  private closed = false;
  /** Bytes received on connections that are gone. */
  private receivedBefore = 0;
  private readonly key: string;
  /** Read-modify-write of partial blocks, one at a time. */
  private partial: Promise<void> = Promise.resolve();
  /** Writes acknowledged and not flushed, told as lost when their connection is. */
  private readonly durability = new DurabilityWatch();

  private constructor(
    private readonly options: NbdDeviceOptions,
    first: NbdConnection,
    readonly info: ExportInfo,
  ) {
    this.options = { ...options };
    this.key = first.endpoint ? `nbd:${first.endpoint}/${options.exportName}` : options.key;
    this.connection = first;
    this.watch(first);
  }

  /** Connects and negotiates; a failure is a BlockError naming the export and the reason. */
  static async open(options: NbdDeviceOptions): Promise<NbdDevice> {
    const connection = await connectTo(options);
    const info = connection.info;
    if (!options.readOnly && info.flags & TFLAG.READ_ONLY) {
      connection.close();
      throw new BlockError('EROFS', 'open', 0, 0, `${options.name}: the export is read-only`);
    }
    return new NbdDevice(options, connection, info);
  }

  get size(): number {
    return this.info.size;
  }

  get readOnly(): boolean {
    return this.options.readOnly;
  }

  /** Hands an unused device to a new owner who wants `readOnly` access (EROFS on a read-only export). */
  claim(readOnly: boolean, onClosed?: () => void): this {
    if (!readOnly && this.info.flags & TFLAG.READ_ONLY) throw new BlockError('EROFS', 'open', 0, 0, `${this.options.name}: the export is read-only`);
    this.options.readOnly = readOnly;
    if (onClosed) this.options.onClosed = onClosed;
    return this;
  }

  /** Bytes the server has sent on every connection so far (a sparse copy's test counts them). */
  get bytesReceived(): number {
    return this.receivedBefore + (this.connection?.received ?? 0);
  }

  /** The export by where its first connection arrived (one export spelt two ways is one), or by its URI when the transport cannot tell. */
  async identity(): Promise<FileIdentity> {
    return { key: this.key, size: this.info.size, modifiedMs: 0 };
  }

  /**
   * A server that restarts, or a connection cut, may take with it what the
   * server acknowledged and held unflushed; nothing fails for those writes,
   * so the listener hears of them (the next request connects again).
   */
  watchDurability(listener: (notice: DurabilityNotice) => void): () => void {
    return this.durability.watch(listener);
  }

  private watch(connection: NbdConnection): void {
    connection.onLost = (err) => {
      if (this.connection === connection) {
        this.receivedBefore += connection.received;
        this.connection = null;
      }
      const why = err.message.replace(/^[^:]*: /, '');
      this.durability.lost(new BlockError('EIO', 'write', 0, 0, `${this.options.name}: ${why}; what the server acknowledged since the last flush may be gone`));
    };
  }

  /** The live connection, or a new one (the same export, the same size). */
  private async live(op: BlockOp, offset: number, bytes: number): Promise<NbdConnection> {
    if (this.closed) throw closedError(op, offset, bytes);
    if (this.connection && !this.connection.lost) return this.connection;
    this.connecting ??= (async () => {
      try {
        const next = await connectTo(this.options);
        if (next.info.size !== this.info.size) {
          next.close();
          throw new BlockError('ESTALE', op, offset, bytes, `${this.options.name}: the export's size changed from ${this.info.size} to ${next.info.size} bytes while reconnecting`);
        }
        if (!this.options.readOnly && next.info.flags & TFLAG.READ_ONLY) {
          next.close();
          throw new BlockError('EROFS', op, offset, bytes, `${this.options.name}: the export became read-only while reconnecting`);
        }
        this.connection = next;
        this.watch(next);
        return next;
      } finally {
        this.connecting = null;
      }
    })();
    try {
      return await this.connecting;
    } catch (err) {
      if (err instanceof BlockError) throw new BlockError(err.code === 'ENOENT' && op !== 'open' ? 'EIO' : err.code, op, offset, bytes, err.detail, { cause: err });
      throw err;
    }
  }

  /** One request, its failure a BlockError for `op`. */
  private async send(op: BlockOp, type: CommandType, flags: number, offset: number, length: number, payload?: { data?: Uint8Array; into?: Uint8Array }): Promise<Extent[] | undefined> {
    const current = this.connection;
    const connection = current && !current.lost && !this.closed ? current : await this.live(op, offset, length);
    try {
      const answer = await connection.request(type, flags, offset, length, payload);
      if ((type === CMD.WRITE || type === CMD.WRITE_ZEROES || type === CMD.TRIM) && !(flags & CMD_FLAG.FUA)) this.durability.acknowledgedWrite();
      return answer;
    } catch (err) {
      if (err instanceof NbdRequestError) {
        const code: Errno = this.closed ? 'ECANCELED' : err.lost && err.code === 'ECANCELED' ? 'EIO' : err.code;
        throw new BlockError(code, op, offset, length, `${this.options.name}: ${err.message.replace(/^[^:]*: /, '')}`, { cause: err });
      }
      throw err;
    }
  }

  private get minBlock(): number {
    return this.info.minBlock;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    const bytes = into.length;
    checkDeviceRequest('read', offset, bytes, this.size, true);
    if (this.closed) throw closedError('read', offset, bytes);
    if (bytes === 0) return;
    const min = this.minBlock;
    if (offset % min !== 0 || bytes % min !== 0) {
      // Widen to whole blocks, then hand back the part asked for.
      const start = offset - (offset % min);
      const end = Math.min(this.size, Math.ceil((offset + bytes) / min) * min);
      const whole = new Uint8Array(end - start);
      await this.readAligned(start, whole);
      into.set(whole.subarray(offset - start, offset - start + bytes));
      return;
    }
    await this.readAligned(offset, into);
  }

  private readAligned(offset: number, into: Uint8Array): Promise<void> {
    const max = this.info.maxPayload;
    return inPieces(Math.ceil(into.length / max), (i) => {
      const piece = into.subarray(i * max, Math.min(into.length, (i + 1) * max));
      return this.send('read', CMD.READ, 0, offset + i * max, piece.length, { into: piece });
    });
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const bytes = data.length;
    if (this.options.readOnly) throw readOnlyError('write', offset, bytes);
    checkDeviceRequest('write', offset, bytes, this.size, true);
    if (this.closed) throw closedError('write', offset, bytes);
    if (bytes === 0) return;
    const min = this.minBlock;
    if (offset % min !== 0 || bytes % min !== 0) {
      await this.readModifyWrite(offset, bytes, (whole, at) => whole.set(data, at));
      return;
    }
    await this.writeAligned(offset, data);
  }

  private writeAligned(offset: number, data: Uint8Array): Promise<void> {
    const max = this.info.maxPayload;
    const flags = this.fua();
    return inPieces(Math.ceil(data.length / max), (i) => {
      const piece = data.subarray(i * max, Math.min(data.length, (i + 1) * max));
      return this.send('write', CMD.WRITE, flags, offset + i * max, piece.length, { data: piece });
    });
  }

  /** Whole blocks around a partial range: read, changed by `change`, written back (one at a time). */
  private readModifyWrite(offset: number, bytes: number, change: (whole: Uint8Array, at: number) => void): Promise<void> {
    const min = this.minBlock;
    const run = async () => {
      const start = offset - (offset % min);
      const end = Math.min(this.size, Math.ceil((offset + bytes) / min) * min);
      const whole = new Uint8Array(end - start);
      await this.readAligned(start, whole);
      change(whole, offset - start);
      await this.writeAligned(start, whole);
    };
    const next = this.partial.then(run, run);
    this.partial = next.catch(() => {});
    return next;
  }

  /** FUA when asked for, and always on a server that takes FUA but no FLUSH (a flush could not make writes durable). */
  private fua(): number {
    const flags = this.info.flags;
    if (!(flags & TFLAG.SEND_FUA)) return 0;
    return this.options.writeThrough || !(flags & TFLAG.SEND_FLUSH) ? CMD_FLAG.FUA : 0;
  }

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
    if (this.options.readOnly || !(this.info.flags & TFLAG.SEND_FLUSH)) return;
    await this.durability.flush(() => this.send('flush', CMD.FLUSH, 0, 0, 0));
  }

  /** NBD_CMD_TRIM where the server takes it (advisory: the range may read back as before). */
  async discard(offset: number, bytes: number): Promise<void> {
    if (this.options.readOnly) throw readOnlyError('discard', offset, bytes);
    checkDeviceRequest('discard', offset, bytes, this.size, true);
    if (!(this.info.flags & TFLAG.SEND_TRIM)) return;
    const min = this.minBlock;
    const start = Math.ceil(offset / min) * min;
    const end = Math.floor((offset + bytes) / min) * min;
    await inPieces(Math.ceil(Math.max(0, end - start) / MAX_RANGE_REQUEST), (i) => {
      const at = start + i * MAX_RANGE_REQUEST;
      return this.send('discard', CMD.TRIM, 0, at, Math.min(MAX_RANGE_REQUEST, end - at));
    });
  }

  /**
   * Zeroes: NBD_CMD_WRITE_ZEROES (with NO_HOLE unless `unmap`), or written
   * zero blocks on a server without it. Partial blocks at either end are
   * read, zeroed and written back.
   */
  async writeZeroes(offset: number, bytes: number, options: { unmap: boolean }): Promise<void> {
    if (this.options.readOnly) throw readOnlyError('write', offset, bytes);
    checkDeviceRequest('write', offset, bytes, this.size, true);
    if (bytes === 0) return;
    // Whole blocks [start, end) go as one request; the partial blocks around them are zeroed in place.
    const min = this.minBlock;
    const last = offset + bytes;
    const start = Math.min(last, Math.ceil(offset / min) * min);
    const end = Math.max(start, Math.floor(last / min) * min);
    const zeroPart = (from: number, to: number) => this.readModifyWrite(from, to - from, (whole, at) => whole.fill(0, at, at + to - from));
    const pieces: Promise<unknown>[] = [];
    if (offset < start) pieces.push(zeroPart(offset, start));
    if (end < last) pieces.push(zeroPart(end, last));
    if (end > start && this.info.flags & TFLAG.SEND_WRITE_ZEROES) {
      const flags = (options.unmap ? 0 : CMD_FLAG.NO_HOLE) | this.fua();
      pieces.push(
        inPieces(Math.ceil((end - start) / MAX_RANGE_REQUEST), (i) => {
          const at = start + i * MAX_RANGE_REQUEST;
          return this.send('write', CMD.WRITE_ZEROES, flags, at, Math.min(MAX_RANGE_REQUEST, end - at));
        }),
      );
    } else if (end > start) {
      // One buffer of zeroes, written again and again (writeAligned splits it at the maximum payload).
      const zeroes = new Uint8Array(Math.min(ZEROES_BUFFER, end - start));
      pieces.push(
        inPieces(Math.ceil((end - start) / zeroes.length), (i) => {
          const at = start + i * zeroes.length;
          return this.writeAligned(at, zeroes.subarray(0, Math.min(zeroes.length, end - at)));
        }),
      );
    }
    await settleAll(pieces);
  }

  /**
   * base:allocation at `offset`: `allocated` false where the server says the
   * range reads as zeroes (a hole or not), for at most `bytes`. A server
   * without the context calls everything allocated.
   */
  async allocation(offset: number, bytes: number): Promise<{ allocated: boolean; bytes: number }> {
    checkDeviceRequest('read', offset, bytes, this.size, true);
    const length = Math.min(bytes, this.size - offset);
    if (this.info.allocationContext === null || length <= 0) return { allocated: true, bytes: Math.max(1, length) };
    const min = this.minBlock;
    const start = offset - (offset % min);
    // Block status carries no data: ask as far as the 32-bit length reaches (a sparse 64 GiB export takes a few requests).
    const longest = MAX_LENGTH - (MAX_LENGTH % Math.max(min, 4096));
    const span = Math.min(longest, Math.ceil((offset + length) / min) * min - start);
    const extents = (await this.send('read', CMD.BLOCK_STATUS, CMD_FLAG.REQ_ONE, start, span)) ?? [];
    const first = extents[0];
    if (!first || start + first.bytes <= offset) return { allocated: true, bytes: Math.min(length, min) };
    return { allocated: (first.flags & STATE_ZERO) === 0, bytes: Math.min(length, start + first.bytes - offset) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.connecting?.catch(() => {});
    this.connection?.close();
    this.connection = null;
    this.options.onClosed?.();
  }
}

async function connectTo(options: NbdDeviceOptions): Promise<NbdConnection> {
  let transport;
  try {
    transport = await options.connect();
  } catch (err) {
    const code = (err as { code?: string }).code;
    const errno: Errno = code === 'ENOENT' ? 'ENOENT' : code === 'EACCES' ? 'EACCES' : code === 'ETIMEDOUT' ? 'ETIMEDOUT' : 'EIO';
    throw new BlockError(errno, 'open', 0, 0, `${options.name}: cannot connect: ${(err as Error).message}`, { cause: err });
  }
  try {
    return await NbdConnection.open(transport, options.exportName, { idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_NBD_IDLE_TIMEOUT_MS });
  } catch (err) {
    if (err instanceof NbdHandshakeError) throw new BlockError(err.code, 'open', 0, 0, `${options.name}: ${err.message.replace(/^[^:]*: /, '')}`, { cause: err });
    throw err;
  }
}

/**
 * Runs `count` pieces, each made only when its turn comes, at most
 * MAX_REQUESTS_IN_FLIGHT at a time: a server announcing one-byte blocks
 * turns a write of 8 MiB into 8 Mi requests, and none of them exists before
 * it is sent. After a failure nothing new starts; the first failure is
 * thrown once the pieces under way settled.
 */
async function inPieces(count: number, piece: (index: number) => Promise<unknown>): Promise<void> {
  if (count === 1) {
    await piece(0);
    return;
  }
  let next = 0;
  let failure: { reason: unknown } | null = null;
  const worker = async () => {
    while (next < count && !failure) {
      const index = next++;
      try {
        await piece(index);
      } catch (reason) {
        failure ??= { reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(count, MAX_REQUESTS_IN_FLIGHT) }, worker));
  if (failure) throw (failure as { reason: unknown }).reason;
}

/** Waits for every piece, then throws the first failure (nothing is left running behind a throw). */
async function settleAll(pieces: Promise<unknown>[]): Promise<void> {
  if (pieces.length === 1) {
    await pieces[0];
    return;
  }
  const results = await Promise.allSettled(pieces);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}
