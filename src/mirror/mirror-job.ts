/**
 * The mirror job: QEMU's blockdev-mirror (block/mirror.c) over two images,
 * a Job (job.ts) whose body is the copy loop.
 *
 * The loop owns the dirty bitmap (chunks.ts). It takes the next dirty run
 * (wrapping to 0), clears its bits before any I/O (so a source write that
 * lands meanwhile dirties them again), asks the source what the run holds,
 * and copies, zeroes or deallocates it, with at most 16 operations in
 * flight (in-flight.ts) sharing a buffer pool in the kernel's memory. A
 * failed operation marks its range dirty again before the side's error
 * policy decides (under ignore the range backs off, backoff.ts). Progress
 * counts only what succeeded. When nothing is dirty, nothing is in flight
 * and the target flushed, the job is READY and keeps mirroring source writes
 * (source-writes.ts) until it is completed or cancelled. Checkpoints
 * (checkpoints.ts) let a later job resume.
 */
import { type BlockError, type DurabilityNotice, BlockError as BlockErrorClass, toBlockError } from '../block/block-device.js';
import type { ImageFormat } from '../format/image-format.js';
import { type BufferPool, Kernel, MAX_BITMAP_CHUNKS } from '../kernel/kernel.js';
import { Backoff, FLUSH_KEY } from './backoff.js';
import { Checkpoints } from './checkpoints.js';
import { ChunkMap } from './chunks.js';
import { type Op, InFlight } from './in-flight.js';
import { Job, type ProgressData } from './job.js';
import { JobError } from '../qapi/job-states.js';
import { type ResolvedOptions, MAX_IN_FLIGHT, OptionError, ioLimits, resolveOptions } from './options.js';
import { SourceWrites } from './source-writes.js';
import type { CellState, JobOutcome, JobStats, MirrorJobParams } from './types.js';

/**
 * Block status is asked in pieces of at most this many bytes during the
 * initial scan; a piece that came back whole and held no data doubles the
 * next (up to DIRTY_INIT_MAX_STEP), so the holes of a sparse 8 TiB source
 * cost a handful of questions, while pieces of data stay short enough for
 * a pause or a cancel to be heard between them.
 */
const DIRTY_INIT_STEP = 1 << 30;
const DIRTY_INIT_MAX_STEP = 2 ** 40;

export class MirrorJob extends Job {
  readonly options: ResolvedOptions;
  readonly size: number;
  readonly granularity: number;
  readonly nbChunks: number;

  private readonly chunks: ChunkMap;
  private readonly ops: InFlight;
  private readonly backoff: Backoff;
  private readonly checkpoints: Checkpoints;
  private readonly writes: SourceWrites;
  private readonly pool: BufferPool;
  private readonly opBytes: number;
  private offsetDone = 0;
  private bytesRead = 0;
  private bytesWritten = 0;
  private bytesZero = 0;
  private failureValue: BlockError | null = null;
  /** The process is about to exit (halt): nothing new is issued. */
  private halted = false;
  /** No more source writes: the job is finishing (or halted). */
  private writesClosed = false;
  private resuming = false;
  /** The initial scan is complete (or was not needed): checkpoints describe the whole image. */
  private scanned = false;
  /** len once the job concluded (its bitmaps are gone). */
  private finalLen: number | undefined;
  /** The numbers at the end: a concluded job still says what it left dirty. */
  private finalStats: JobStats | undefined;
  private scanEnded!: () => void;
  /** Stops hearing the target's word on its flushes (a target that may lose acknowledged writes). */
  private stopWatching: (() => void) | null = null;
  /** Settles once the scan is complete, or the job ended without one. */
  private readonly scanSettled = new Promise<void>((resolve) => (this.scanEnded = resolve));

  private constructor(
    readonly source: ImageFormat,
    readonly target: ImageFormat,
    options: ResolvedOptions,
    private readonly kernel: Kernel,
    params: MirrorJobParams,
  ) {
    const now = params.now ?? (() => Date.now());
    super({ id: options.id, speed: options.speed, autoFinalize: options.autoFinalize, autoDismiss: options.autoDismiss, now });
    this.options = options;
    this.size = source.size;
    this.granularity = options.granularity;
    const { opBytes, nbBuffers } = ioLimits(options.granularity, options.bufSize);
    this.opBytes = opBytes;
    // Everything in linear memory is sized here, before any I/O: views stay valid.
    const backsOff = options.onSourceError === 'ignore' || options.onTargetError === 'ignore';
    this.chunks = new ChunkMap(kernel, this.size, this.granularity, options.targetIsZero, backsOff, target.watchDurability !== undefined);
    this.nbChunks = this.chunks.nbChunks;
    try {
      this.pool = kernel.newPool(opBytes, nbBuffers);
    } catch (err) {
      this.chunks.free();
      throw err;
    }
    this.ops = new InFlight(this.chunks, {
      // Bodies handle their own I/O errors; anything else is a bug: fail the job, keep the range.
      onBug: (err, op) => {
        this.chunks.dirty.set(op.firstChunk, op.nbChunks);
        this.failureValue ??= toBlockError(err, 'write', op.offset, op.bytes);
      },
      onSettled: () => {
        this.emitProgress(false);
        this.kick();
      },
    });
    this.backoff = new Backoff(this.chunks.backingOff, now);
    this.checkpoints = new Checkpoints(params.checkpointer, (params.checkpointIntervalSeconds ?? 5) * 1000, now, {
      canSave: () => this.scanned && !this.chunks.released,
      snapshot: () => ({ id: this.id, options: this.options, size: this.size, status: this.statusValue, offset: this.offsetDone, bitmap: this.serializeBitmap() }),
      flushSource: () => this.source.flush(),
      flushTarget: async () => {
        try {
          await this.target.flush();
        } catch (err) {
          // A failed flush is a target error like any other: its policy decides (QEMU meets it before READY).
          const s = this.statusValue;
          if (s === 'running' || s === 'ready' || s === 'paused' || s === 'standby') this.onIoError('target', 'write', toBlockError(err, 'flush', 0, 0), 0, 0);
          throw err;
        }
      },
      flushTargetQuietly: () => this.target.flush(),
    }, params.resume !== undefined, options.id);
    this.writes = new SourceWrites({
      id: this.id,
      source,
      target,
      copyMode: options.copyMode,
      chunks: this.chunks,
      ops: this.ops,
      checkpoints: this.checkpoints,
      started: () => this.started,
      closed: () => this.writesClosed || this.statusValue === 'concluded' || this.statusValue === 'null' || this.statusValue === 'aborting',
      copied: (bytes) => {
        this.bytesWritten += bytes;
        this.offsetDone += bytes;
      },
      targetError: (error, first, nb) => this.onIoError('target', 'write', error, first, nb),
      kick: () => this.kick(),
    });
  }

  /** Validates everything and builds the job in status `created`; `start()` runs it. */
  static async create(params: MirrorJobParams): Promise<MirrorJob> {
    const { source, target } = params;
    if (source === target) throw new OptionError("Can't mirror node into itself");
    if (source.size !== target.size) {
      throw new OptionError(`Source and target image have different sizes (${source.size} and ${target.size} bytes)`);
    }
    if (target.readOnly) throw new OptionError('The target image is read-only');
    const targetInfo = await target.info();
    // sync=top on an image without a backing file copies everything, as full does.
    const sourceInfo = await source.info();
    const requested = params.options.sync === 'top' && !sourceInfo.backingFile ? { ...params.options, sync: 'full' as const } : params.options;
    const options = resolveOptions(requested, {
      targetClusterSize: targetInfo.clusterSize,
      // A target the job created reads as zeroes, unless it has a backing file.
      targetIsZero: Boolean(params.targetCreated) && !targetInfo.backingFile,
    });
    const chunks = Math.ceil(source.size / options.granularity);
    if (chunks > MAX_BITMAP_CHUNKS) {
      const least = 2 ** Math.ceil(Math.log2(source.size / MAX_BITMAP_CHUNKS));
      throw new OptionError(`The image (${source.size} bytes) is too large for granularity ${options.granularity}: its dirty bitmap would have ${chunks} chunks (at most ${MAX_BITMAP_CHUNKS}); use a granularity of ${least} or more`);
    }
    const kernel = params.kernel ?? (await Kernel.create());
    const job = new MirrorJob(source, target, options, kernel, params);
    // A resumed job starts a new count: its len is what is still dirty.
    if (params.resume) {
      try {
        job.chunks.dirty.deserialize(params.resume.bitmap);
      } catch (err) {
        // A bitmap refused leaves nothing behind in a kernel shared with other jobs.
        job.chunks.free();
        job.pool.free();
        throw err;
      }
    }
    job.resuming = Boolean(params.resume);
    job.setStatus('created');
    return job;
  }

  // ---- observation ---------------------------------------------------------------------

  stats(): JobStats {
    if (this.finalStats) return { ...this.finalStats, failed: this.finalStats.failed.map((f) => ({ ...f })) };
    return {
      granularity: this.granularity,
      nbChunks: this.nbChunks,
      dirtyChunks: this.chunks.dirtyCount,
      dirtyBytes: this.chunks.dirtyBytes(),
      inFlightOps: this.ops.size,
      inFlightBytes: this.ops.unsettledBytes,
      failed: this.chunks.failedRanges(),
      bytesDone: this.offsetDone,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      bytesZero: this.bytesZero,
      copyMode: this.options.copyMode,
    };
  }

  /** A picture of the bitmap in `cells` cells: failed beats in flight beats dirty beats clean. */
  picture(cells: number): CellState[] {
    return this.chunks.picture(cells);
  }

  /** The dirty bitmap as stored in checkpoints (chunks in flight and being written count as dirty). */
  serializeBitmap(): Uint8Array {
    if (this.chunks.released) throw new JobError(`Job '${this.id}' has concluded; it has no bitmap any more`);
    return this.chunks.serialize(this.writes.changing);
  }

  /** QEMU's len: done, plus dirty, plus in flight (active writes too, as active_write_bytes_in_flight). */
  private get len(): number {
    return this.finalLen ?? this.offsetDone + this.chunks.dirtyBytes() + this.ops.unsettledBytes;
  }

  protected progressData(): ProgressData {
    return { type: 'mirror', device: this.id, len: this.len, offset: this.offsetDone, speed: this.rate.speed };
  }

  protected get quiet(): boolean {
    return !this.chunks.released && this.chunks.dirty.count === 0 && this.ops.size === 0 && this.writes.active === 0;
  }

  protected get failure(): BlockError | null {
    return this.failureValue;
  }

  // ---- source writes (a guest, or any program embedding the job) --------------------------

  /** Writes guest data to the source through the job (see source-writes.ts for the two copy modes). */
  sourceWrite(offset: number, data: Uint8Array): Promise<void> {
    return this.writes.write(offset, data);
  }

  // ---- the body --------------------------------------------------------------------------

  protected async body(): Promise<JobOutcome> {
    this.stopWatching = this.target.watchDurability?.((notice) => this.onDurability(notice)) ?? null;
    try {
      if (!this.resuming) await this.dirtyInit();
      // Until the scan is done the bitmap is incomplete: no checkpoint may be taken before this.
      this.scanned = true;
      this.scanEnded();
      // The first checkpoint lands before any data moves: from here on, an interruption can resume.
      // It calls nothing clean that this job wrote, so it needs no flush of the target.
      if (this.checkpoints.enabled && !this.cancelRequested && !this.failureValue) await this.checkpoints.save({ flush: false });
      if (!this.cancelRequested && !this.failureValue) await this.copyLoop();
    } catch (err) {
      // An error outside any policy (a bug, or the initial scan failing) fails the job.
      this.failureValue ??= toBlockError(err, 'read', 0, 0);
    }
    this.scanEnded();
    await this.drain();
    if (this.failureValue) return 'failed';
    return this.cancelRequested ? 'cancelled' : 'completed';
  }

  /** Phase 1: mark what the source holds (as sync says) dirty. */
  private async dirtyInit(): Promise<void> {
    const { sync, targetIsZero } = this.options;
    if (sync === 'none') return;
    let step = DIRTY_INIT_STEP;
    for (let offset = 0; offset < this.size; ) {
      if (this.cancelRequested) return;
      await this.pausePoint();
      const asked = Math.min(step, this.size - offset);
      const status = await this.source.blockStatus(offset, asked);
      if (status.bytes <= 0) throw new BlockErrorClass('EIO', 'read', offset, 0, 'block status made no progress');
      const allocatedHere = status.depth === 0 && status.kind !== 'unallocated';
      // Zeroes need writing only on a target that is not zero.
      const wanted = sync === 'top' ? allocatedHere : status.kind === 'data' || !targetIsZero;
      const { first, nb } = this.chunks.span(offset, status.bytes);
      // A hole left alone on a zero target reads as zero there: `written` stays clear.
      if (wanted) this.chunks.dirty.set(first, nb);
      step = status.bytes === asked && status.kind !== 'data' ? Math.min(step * 2, DIRTY_INIT_MAX_STEP) : DIRTY_INIT_STEP;
      offset += status.bytes;
    }
  }

  /** Phase 2 and 3: copy until READY, then keep up until completed or cancelled. */
  private async copyLoop(): Promise<void> {
    const chunks = this.chunks;
    const maxChunks = Math.max(1, Math.floor(this.opBytes / this.granularity));
    let cursor = 0;
    for (;;) {
      if (this.failureValue || this.cancelRequested) return;
      if (this.halted) {
        this.busy = false;
        await this.sleep();
        continue;
      }
      await this.pausePoint();
      if (this.failureValue || this.cancelRequested) return;
      // The speed limit is paid after dispatching, as in QEMU: before more is issued, and before READY.
      if ((!this.isReady || this.completeRequested) && (await this.rateSleep())) continue;
      this.backoff.expire();
      this.checkpoints.maybe();

      if (this.quiet) {
        if (!this.isReady || this.completeRequested) {
          if (this.completeRequested) this.writesClosed = true;
          const flushed = await this.flushTarget();
          if (this.failureValue) return;
          if (!flushed) {
            // Under ignore the flush is retried; meanwhile the completion is not one step away (a force cancel may come first).
            if (this.completeRequested) this.completionStalled = true;
            this.writesClosed = false;
            await this.backoffSleep(this.backoff.delay(FLUSH_KEY));
            continue;
          }
          // Source writes may have landed while the flush ran, or a cancel arrived.
          if (!this.quiet || this.cancelRequested) {
            this.writesClosed = false;
            continue;
          }
          if (this.completeRequested) return;
          this.transitionToReady();
          void this.checkpoints.save();
          continue;
        }
        this.busy = false;
        await this.sleep();
        this.busy = true;
        continue;
      }

      // Issue operations while there is room.
      let waitMs: number | undefined;
      while (this.ops.size < MAX_IN_FLIGHT && !this.pauseRequested() && !this.cancelRequested && !this.failureValue) {
        const run = chunks.nextIssuable(cursor, maxChunks) ?? (cursor > 0 ? chunks.nextIssuable(0, maxChunks) : null);
        if (!run) {
          waitMs = this.backoff.nextExpiry();
          break;
        }
        // The speed limit: nothing more is dispatched once the slice is paid beyond (rateSleep waits it out).
        if (this.rate.account(0, this.now()) > 0) break;
        if (!this.issue(run.start, run.length)) break; // no free buffer: wait for one
        this.rate.account(chunks.bytesOf(run.start, run.length).bytes, this.now());
        cursor = run.start + run.length;
        if (cursor >= this.nbChunks) cursor = 0;
      }
      await this.sleep(waitMs);
    }
  }

  /**
   * Sleeps while what was dispatched is over the speed limit (not busy, as
   * QEMU's job_sleep_ns). True if it slept (the loop then looks again).
   */
  private async rateSleep(): Promise<boolean> {
    let slept = false;
    for (;;) {
      const waitMs = this.rate.account(0, this.now());
      if (waitMs <= 0 || this.cancelRequested || this.failureValue || this.pauseRequested() || this.halted) return slept;
      slept = true;
      this.busy = false;
      await this.sleep(waitMs);
      this.busy = true;
    }
  }

  /** Starts one operation on [first, first + nb) chunks; false when no buffer is free. */
  private issue(first: number, nb: number): boolean {
    const buffer = this.pool.take();
    if (!buffer) return false;
    const { offset, bytes } = this.chunks.bytesOf(first, nb);
    // Clear before the I/O: a source write from now on dirties the chunks again.
    this.chunks.dirty.reset(first, nb);
    this.chunks.noteTargetWrite(first, nb);
    const op = this.ops.add('copy', first, nb, offset, bytes);
    // The buffer goes back to the pool before the loop is woken, so the wake-up finds it free.
    void op.run(() => this.perform(op, buffer), () => this.pool.give(buffer));
    return true;
  }

  /** One operation: decide by block status, then copy, zero or deallocate. */
  private async perform(op: Op, buffer: { ptr: number; bytes: number }): Promise<void> {
    const g = this.granularity;
    let kind: 'copy' | 'zero' | 'deallocate' = 'copy';
    try {
      const status = await this.source.blockStatus(op.offset, op.bytes);
      // A status shorter than one chunk: copy the chunk, whatever it holds.
      const statusBytes = status.bytes >= op.bytes ? op.bytes : Math.floor(status.bytes / g) * g;
      if (statusBytes >= g || statusBytes === op.bytes) {
        if (status.kind !== 'data' && this.options.sync !== 'top') kind = 'zero';
        // sync=top: what the backing chain holds stays there (the target reads it through the same backing file).
        else if (this.options.sync === 'top' && status.depth > 0) kind = this.target.deallocate ? 'deallocate' : 'copy';
        else if (status.kind === 'zero') kind = 'zero';
        if (statusBytes < op.bytes) {
          // Give back the chunks past the extent: they are dirty again, for a later op.
          const keep = statusBytes / g;
          this.chunks.dirty.set(op.firstChunk + keep, op.nbChunks - keep);
          this.chunks.inFlight.reset(op.firstChunk + keep, op.nbChunks - keep);
          op.nbChunks = keep;
          op.bytes = statusBytes;
        }
      }
    } catch {
      // No status (a metadata read failed): copy, and let the read report the error.
    }
    // Only copies count against the speed limit; zeroes and deallocations cost nothing (QEMU: write_zeroes_ok).
    if (kind !== 'copy') this.rate.refund(op.bytes);
    if (kind === 'zero') return this.finish(op, 'write', () => this.writeZeroesIfNeeded(op.firstChunk, op.nbChunks, op.offset, op.bytes));
    if (kind === 'deallocate') {
      return this.finish(op, 'discard', async () => {
        this.chunks.markWritten(op.firstChunk, op.nbChunks);
        await this.target.deallocate!(op.offset, op.bytes);
        this.bytesZero += op.bytes;
      });
    }
    // Copy: read straight into kernel memory.
    try {
      await this.source.read(op.offset, this.pool.view(buffer, op.bytes));
      this.bytesRead += op.bytes;
    } catch (err) {
      return this.failed('source', 'read', toBlockError(err, 'read', op.offset, op.bytes), op);
    }
    // Runs of non-zero chunks are written; runs of zero chunks become zero writes (or nothing).
    return this.finish(op, 'write', async () => {
      for (let i = 0; i < op.nbChunks; ) {
        const zero = this.chunkIsZero(buffer.ptr, i, op.bytes);
        let j = i + 1;
        while (j < op.nbChunks && this.chunkIsZero(buffer.ptr, j, op.bytes) === zero) j++;
        const runOffset = op.offset + i * g;
        const runBytes = Math.min(j * g, op.bytes) - i * g;
        if (zero) {
          await this.writeZeroesIfNeeded(op.firstChunk + i, j - i, runOffset, runBytes);
        } else {
          this.chunks.markWritten(op.firstChunk + i, j - i);
          await this.target.write(runOffset, this.pool.view(buffer, op.bytes).subarray(i * g, i * g + runBytes));
          this.bytesWritten += runBytes;
        }
        i = j;
      }
    });
  }

  /** Runs an op's target side: success counts it, a failure meets on-target-error. */
  private async finish(op: Op, what: 'write' | 'discard', work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      return this.failed('target', 'write', toBlockError(err, what, op.offset, op.bytes), op);
    }
    this.succeeded(op);
  }

  private chunkIsZero(ptr: number, index: number, bytes: number): boolean {
    const start = index * this.granularity;
    return this.kernel.isZero(ptr + start, Math.min(this.granularity, bytes - start));
  }

  /** Zeroes a range on the target, unless the target is known to read zero there. */
  private async writeZeroesIfNeeded(first: number, nb: number, offset: number, bytes: number): Promise<void> {
    if (!this.chunks.knownZero(first, nb)) {
      await this.target.writeZeroes(offset, bytes, { unmap: this.options.unmap });
      this.bytesWritten += bytes;
    }
    this.bytesZero += bytes;
    this.chunks.markZeroed(first, nb);
  }

  /** An op's work is done: count it (offset grows only here) and stop counting it in flight. */
  private succeeded(op: Op): void {
    const first = op.firstChunk;
    op.settled = true;
    this.chunks.noteTargetWrite(first, op.nbChunks);
    this.offsetDone += op.bytes;
    this.backoff.forget(first);
    this.chunks.forgetFailures(first, op.nbChunks);
  }

  /** A failed operation: the range is dirty again first, then the policy decides. */
  private failed(side: 'source' | 'target', operation: 'read' | 'write', error: BlockError, op: Op): void {
    op.settled = true;
    this.chunks.dirty.set(op.firstChunk, op.nbChunks);
    this.onIoError(side, operation, error, op.firstChunk, op.nbChunks);
  }

  /**
   * The target's word on its flushes. When it lost what it acknowledged (an
   * NBD server that restarted), everything written since the last flush
   * that succeeded is dirty again, and the loss meets on-target-error as a
   * write error over that span; a target whose format cannot be repaired by
   * writing the bytes again (its metadata may be gone) fails the job.
   */
  private onDurability(notice: DurabilityNotice): void {
    const lost = this.chunks.durability(notice.kind);
    if (notice.kind !== 'lost') return;
    const s = this.statusValue;
    if (s !== 'running' && s !== 'ready' && s !== 'paused' && s !== 'standby') return;
    const { offset, bytes } = lost ? this.chunks.bytesOf(lost.first, lost.nb) : { offset: 0, bytes: 0 };
    if (!notice.recoverable) {
      // Whatever the policy: writing the bytes again cannot bring the tables back.
      const error = new BlockErrorClass('EIO', 'write', offset, bytes, `${notice.error.detail}; the target's format keeps tables that may be gone with them: it cannot be trusted`, { cause: notice.error });
      this.errorAction('report', 'write', error, { offset, bytes });
      this.failureValue ??= error;
    } else if (lost) {
      const chunks = `${lost.count} chunk${lost.count === 1 ? '' : 's'}`;
      this.onIoError('target', 'write', new BlockErrorClass('EIO', 'write', offset, bytes, `${notice.error.detail}: the ${chunks} written there since then are dirty again`, { cause: notice.error }), 0, 0);
    }
    this.kick();
  }

  /** An I/O error: [first, first + nb) is a failed range (none for a flush or a loss, whose range is the error's own), then the policy decides. */
  private onIoError(side: 'source' | 'target', operation: 'read' | 'write', error: BlockError, first: number, nb: number): void {
    const range = nb > 0 ? this.chunks.bytesOf(first, nb) : { offset: error.offset, bytes: error.bytes };
    // A flush has no range: it is not a failed range of the picture, nor does it back off a chunk.
    if (nb > 0) this.chunks.noteFailure(first, nb, side, error.code);
    const action = this.errorAction(side === 'source' ? this.options.onSourceError : this.options.onTargetError, operation, error, range);
    if (action === 'report') this.failureValue ??= error;
    if (action === 'ignore' && nb > 0) this.backoff.start(first, nb);
  }

  /** Flushes the target; false (after the policy ran) if that failed. */
  private async flushTarget(): Promise<boolean> {
    try {
      await this.target.flush();
      this.backoff.forget(FLUSH_KEY);
      return true;
    } catch (err) {
      this.onIoError('target', 'write', toBlockError(err, 'flush', 0, 0), 0, 0);
      return false;
    }
  }

  /** Waits for every operation in flight, source writes included. */
  protected drain(): Promise<void> {
    return this.ops.drain(() => this.writes.landings);
  }

  // ---- the end, and checkpoints ------------------------------------------------------------

  protected override async onPaused(): Promise<void> {
    await this.checkpoints.save();
  }

  /** A failed job can be resumed once its cause is fixed: its latest state is kept. */
  protected override async beforeConclusion(outcome: JobOutcome): Promise<void> {
    if (outcome === 'failed') await this.checkpoints.saveNow();
  }

  protected override onConcluded(): void {
    // len stays what it was at the end (a failed job's len still counts what it left dirty), as QEMU's progress does.
    this.finalLen = this.len;
    this.finalStats = this.stats();
    this.stopWatching?.();
    this.checkpoints.stop();
    this.chunks.free();
    this.pool.free();
  }

  /** A failed job keeps its checkpoint (fix the cause, then resume); a finished or cancelled one is done with it. */
  protected override async onGone(outcome: JobOutcome): Promise<void> {
    if (outcome !== 'failed') await this.checkpoints.remove(this.id);
  }

  /** Stores a checkpoint now (for a clean interruption: SIGINT, a closing tab); false if none could be. */
  checkpoint(): Promise<boolean> {
    return this.checkpoints.saveNow();
  }

  /**
   * What a process does before it exits on a signal: stop issuing I/O and
   * taking source writes, wait (at most `timeoutMs`) for what is in flight,
   * then store a checkpoint. `quiet`: nothing more will be written, so the
   * images may be closed and the checkpoint describes them exactly.
   */
  async halt(timeoutMs = 5000): Promise<{ quiet: boolean; saved: boolean }> {
    this.halted = true;
    this.writesClosed = true;
    this.kick();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // An interruption during the initial scan still leaves a checkpoint once the scan is through.
    const quiet = await Promise.race([
      this.scanSettled.then(() => this.drain()).then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    const saved = await this.checkpoint();
    return { quiet, saved };
  }
}
