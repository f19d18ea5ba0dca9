/**
 * What an NBD connection runs over: a byte stream each way. Under Node a
 * TCP or Unix socket (node-transport.ts); in the browser a WebSocket whose
 * binary messages carry the stream (ws-transport.ts), which websockify
 * bridges to any NBD server.
 *
 * The receiving side is a queue the protocol reads from by exact lengths:
 * `take(n)` for a header, `fill(view)` for a payload, straight into the
 * caller's buffer (a read's bytes are copied once, from the socket's chunk
 * into the job's buffer).
 */

export interface NbdTransport {
  /** Queues bytes to send (in order); they are copied before this turn of the event loop ends, and must not change before. */
  send(data: Uint8Array): void;
  /** What arrives. */
  readonly incoming: ByteQueue;
  /** Closes the stream; what is queued to send may be dropped. */
  close(): void;
  /** Where the stream goes, in words (for messages). */
  readonly peer: string;
  /**
   * Where the stream arrived, the same however the address was spelt (the
   * connected peer's address and port, a socket's real path), so one export
   * named two ways is known for one; absent when the transport cannot tell.
   */
  readonly endpoint?: string;
}

/** Opens a transport to a server; rejects with an Error naming the failure. */
export type Connect = () => Promise<NbdTransport>;

/** The stream ended: by the server (closed), by a failure, or by us. */
export class StreamEnded extends Error {
  override name = 'StreamEnded';
}

/** Bytes received and not read yet, read by exact lengths. */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Bytes already read from chunks[0]. */
  private head = 0;
  private queued = 0;
  private ended: Error | null = null;
  private waiter: { bytes: number; resolve: () => void; reject: (err: Error) => void } | null = null;
  /** Bytes received in all (a sparse copy's test counts them). */
  received = 0;
  /** Called whenever bytes arrive (an idle timer listens). */
  onArrival: (() => void) | null = null;

  push(chunk: Uint8Array): void {
    if (this.ended || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.received += chunk.length;
    this.onArrival?.();
    if (this.waiter && this.queued >= this.waiter.bytes) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve();
    }
  }

  /** No more bytes will come; readers waiting (and later ones) fail with `reason`. */
  end(reason: Error): void {
    if (this.ended) return;
    this.ended = reason;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(reason);
  }

  get endedWith(): Error | null {
    return this.ended;
  }

  private async wait(bytes: number): Promise<void> {
    if (this.queued >= bytes) return;
    if (this.ended) throw this.ended;
    if (this.waiter) throw new Error('ByteQueue: one reader at a time');
    await new Promise<void>((resolve, reject) => (this.waiter = { bytes, resolve, reject }));
  }

  /** Exactly `bytes` bytes (a copy when they span chunks). */
  async take(bytes: number): Promise<Uint8Array> {
    await this.wait(bytes);
    return this.takeNow(bytes)!;
  }

  /** Exactly `bytes` bytes if they are here already, else null (no wait: replies that came together are read in one turn). */
  takeNow(bytes: number): Uint8Array | null {
    if (this.queued < bytes) return null;
    const first = this.chunks[0];
    if (first && first.length - this.head >= bytes) {
      const out = first.subarray(this.head, this.head + bytes);
      this.advance(bytes);
      return out;
    }
    const out = new Uint8Array(bytes);
    this.copyOut(out);
    return out;
  }

  /** Fills all of `into` if its bytes are here already (true), else takes nothing (false). */
  fillNow(into: Uint8Array): boolean {
    if (this.queued < into.length) return false;
    this.copyOut(into);
    return true;
  }

  /** Fills all of `into`, in pieces as they arrive. */
  async fill(into: Uint8Array): Promise<void> {
    let done = 0;
    while (done < into.length) {
      await this.wait(1);
      done += this.copyOut(into.subarray(done));
    }
  }

  /** Drops `bytes` bytes (a payload nobody wants). */
  async skip(bytes: number): Promise<void> {
    let left = bytes;
    while (left > 0) {
      await this.wait(1);
      const n = Math.min(left, this.queued);
      this.advance(n);
      left -= n;
    }
  }

  /** Copies what is queued into `into` (as much as fits); returns the count. */
  private copyOut(into: Uint8Array): number {
    let done = 0;
    while (done < into.length && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const n = Math.min(chunk.length - this.head, into.length - done);
      into.set(chunk.subarray(this.head, this.head + n), done);
      done += n;
      this.advance(n);
    }
    return done;
  }

  private advance(bytes: number): void {
    this.queued -= bytes;
    this.head += bytes;
    while (this.chunks.length > 0 && this.head >= this.chunks[0]!.length) {
      this.head -= this.chunks[0]!.length;
      this.chunks.shift();
    }
  }
}
