/**
 * Operations in flight: each holds its chunks in the in-flight bitmap from
 * the moment it is added until its body has run, then gives them (and its
 * buffer) back before it wakes the loop, so the loop always finds what the
 * op released. At most MAX_IN_FLIGHT background ops run at once; active
 * (write-blocking) writes wait for any op on their chunks first.
 */
import type { ChunkMap } from './chunks.js';

export type OpKind = 'copy' | 'zero' | 'discard' | 'active-write';

export interface Op {
  kind: OpKind;
  firstChunk: number;
  nbChunks: number;
  offset: number;
  bytes: number;
  /** Counted as done or dirty again: no longer part of `len` as in flight. */
  settled: boolean;
  done: Promise<void>;
  /** Runs the op's body, then releases its chunks (and `release`, e.g. its buffer) and wakes the loop. */
  run(body: () => Promise<void>, release?: () => void): Promise<void>;
}

export interface InFlightHooks {
  /** A body threw (a bug: bodies handle their own I/O errors): its range must not be lost. */
  onBug(err: unknown, op: Op): void;
  /** An op is gone: progress may move, and the loop wakes. */
  onSettled(): void;
}

export class InFlight {
  readonly ops = new Set<Op>();

  constructor(
    private readonly chunks: ChunkMap,
    private readonly hooks: InFlightHooks,
  ) {}

  get size(): number {
    return this.ops.size;
  }

  /** Bytes of the ops not yet counted as done or dirty. */
  get unsettledBytes(): number {
    let bytes = 0;
    for (const op of this.ops) if (!op.settled) bytes += op.bytes;
    return bytes;
  }

  add(kind: OpKind, firstChunk: number, nbChunks: number, offset: number, bytes: number): Op {
    const { chunks, hooks, ops } = this;
    chunks.inFlight.set(firstChunk, nbChunks);
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const op: Op = {
      kind,
      firstChunk,
      nbChunks,
      offset,
      bytes,
      settled: false,
      done,
      run: async (body, release) => {
        try {
          await body();
        } catch (err) {
          hooks.onBug(err, op);
        } finally {
          ops.delete(op);
          chunks.inFlight.reset(op.firstChunk, op.nbChunks);
          // Another op may share edge chunks with an active write: keep theirs marked.
          for (const other of ops) chunks.inFlight.set(other.firstChunk, other.nbChunks);
          release?.();
          resolve();
          hooks.onSettled();
        }
      },
    };
    ops.add(op);
    return op;
  }

  /**
   * Adds an op once no other op overlaps its chunks. The check and the add
   * happen in one synchronous step, so two waiters cannot both get in.
   */
  async addWhenFree(kind: OpKind, first: number, nb: number, offset: number, bytes: number): Promise<Op> {
    for (;;) {
      const conflict = [...this.ops].find((op) => op.firstChunk < first + nb && first < op.firstChunk + op.nbChunks);
      if (!conflict) return this.add(kind, first, nb, offset, bytes);
      await conflict.done;
    }
  }

  /** Waits for every op in flight, and for `others` (source writes) too, until none is left. */
  async drain(others: () => Promise<void>[]): Promise<void> {
    for (;;) {
      const waiting = [...[...this.ops].map((op) => op.done), ...others()];
      if (waiting.length === 0) return;
      await Promise.all(waiting);
    }
  }
}
