/**
 * Writes to the source while the job runs (a guest, x-source-write), in
 * QEMU's two copy modes. Background: the range is dirtied before the write
 * (so a copy under way is redone) and after it (a copy may have read the
 * old bytes in between). Write-blocking: the write waits for any op on its
 * chunks, then goes to the source and to the target before it returns (a
 * failed target write dirties the range and meets on-target-error; the
 * source write still succeeds). Until a write lands its chunks count as
 * dirty in checkpoints; a write waits for a checkpoint under way, and for
 * the stored one to be marked as written after (checkpoints.ts).
 */
import { type BlockError, BlockError as BlockErrorClass, checkDeviceRequest, toBlockError } from '../block/block-device.js';
import type { ImageFormat } from '../format/image-format.js';
import type { Checkpoints } from './checkpoints.js';
import type { ChunkMap } from './chunks.js';
import type { InFlight } from './in-flight.js';
import type { CopyMode } from './options.js';

/** What the writes need of their job. */
export interface WritesHost {
  readonly id: string;
  readonly source: ImageFormat;
  readonly target: ImageFormat;
  readonly copyMode: CopyMode;
  readonly chunks: ChunkMap;
  readonly ops: InFlight;
  readonly checkpoints: Checkpoints;
  /** The job has started its loop (before that, every write is a background one). */
  started(): boolean;
  /** The job takes no more writes (finishing, or gone). */
  closed(): boolean;
  /** A write-blocking write reached the target: progress, as QEMU's do_sync_target_write counts it. */
  copied(bytes: number): void;
  targetError(error: BlockError, first: number, nb: number): void;
  kick(): void;
}

export class SourceWrites {
  /** Writes under way, by number: their chunks count as dirty in checkpoints. */
  private readonly pending = new Map<number, { first: number; nb: number; done: Promise<void> }>();
  private next = 0;
  /** Writes between their start and the moment they reached the source (and target). */
  private activeCount = 0;

  constructor(private readonly host: WritesHost) {}

  /** Chunks being changed now. */
  get changing(): Iterable<{ first: number; nb: number }> {
    return this.pending.values();
  }

  /** One promise per write under way. */
  get landings(): Promise<void>[] {
    return [...this.pending.values()].map((w) => w.done);
  }

  get active(): number {
    return this.activeCount;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const { host } = this;
    checkDeviceRequest('write', offset, data.length, host.chunks.size, true);
    const refuse = () => new BlockErrorClass('EBUSY', 'write', offset, data.length, `job '${host.id}' has finished with the source; writes go elsewhere now`);
    if (host.closed()) throw refuse();
    if (data.length === 0) return;
    // A checkpoint under way stamps the source after it took the bitmap: a write landing in between
    // would be in the stamp and not in the bitmap. And a stored checkpoint that calls these chunks
    // clean is marked first as written after (checkpoints.ts). Writes wait for both, then register
    // and dirty their chunks in one synchronous step.
    const { checkpoints } = host;
    for (;;) {
      if (checkpoints.pending) await checkpoints.pending;
      else if (!checkpoints.writesMarked) await checkpoints.markWrites();
      else break;
    }
    if (host.closed()) throw refuse();
    const { first, nb } = host.chunks.span(offset, data.length);
    host.checkpoints.sourceWrite();
    const id = this.next++;
    let landed!: () => void;
    this.pending.set(id, { first, nb, done: new Promise<void>((r) => (landed = r)) });
    try {
      if (host.copyMode === 'background' || !host.started()) await this.background(offset, data, first, nb);
      else await this.blocking(offset, data, first, nb);
    } finally {
      this.pending.delete(id);
      // Landed (or failed part way): what it changed of the source is not durable until the next flush of the source.
      host.checkpoints.sourceWrite();
      landed();
      host.kick();
    }
  }

  private async background(offset: number, data: Uint8Array, first: number, nb: number): Promise<void> {
    const { chunks } = this.host;
    chunks.dirty.set(first, nb);
    chunks.noteGuestWrite(first, nb);
    this.activeCount++;
    try {
      await this.host.source.write(offset, data);
    } finally {
      this.activeCount--;
      if (!chunks.released) chunks.dirty.set(first, nb);
    }
  }

  private async blocking(offset: number, data: Uint8Array, first: number, nb: number): Promise<void> {
    const { host } = this;
    const { chunks } = host;
    const op = await host.ops.addWhenFree('active-write', first, nb, offset, data.length);
    let sourceError: unknown;
    this.activeCount++;
    try {
      await op.run(async () => {
        try {
          await host.source.write(offset, data);
        } catch (err) {
          // The guest's write failed: it hears so, and whatever part landed is copied later.
          sourceError = err;
          chunks.dirty.set(first, nb);
          return;
        }
        try {
          chunks.markWritten(first, nb);
          chunks.noteTargetWrite(first, nb);
          await host.target.write(offset, data);
          chunks.noteTargetWrite(first, nb);
          host.copied(data.length);
          op.settled = true;
          // Chunks wholly covered are now equal on both sides; edge chunks keep their state.
          const end = offset + data.length;
          const fullFirst = Math.ceil(offset / chunks.granularity);
          const fullEnd = end === chunks.size ? chunks.nbChunks : Math.floor(end / chunks.granularity);
          if (fullEnd > fullFirst) chunks.dirty.reset(fullFirst, fullEnd - fullFirst);
        } catch (err) {
          chunks.dirty.set(first, nb);
          op.settled = true;
          host.targetError(toBlockError(err, 'write', offset, data.length), first, nb);
        }
      });
    } finally {
      this.activeCount--;
    }
    if (sourceError !== undefined) throw toBlockError(sourceError, 'write', offset, data.length);
  }
}
