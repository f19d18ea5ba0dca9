/**
 * The mirror job: QEMU's blockdev-mirror over two images.
 *
 * One loop owns the dirty bitmap. It takes the next dirty run (wrapping to
 * 0), clears its bits before any I/O (so a source write that lands meanwhile
 * dirties them again), asks the source what the run holds, and copies, zeroes
 * or discards it, with at most 16 operations in flight sharing a buffer pool
 * in the kernel's memory. A failed operation marks its range dirty again
 * before the side's error policy decides what happens. Progress counts only
 * what succeeded. When nothing is dirty, nothing is in flight and the target
 * flushed, the job is READY and keeps mirroring source writes until it is
 * completed or cancelled.
 */
import { type Errno, BlockError, checkRequest, describeErrno, toBlockError } from '../block/block-device.js';
import type { ImageFormat } from '../format/image-format.js';
import { type DirtyBitmap, type BufferPool, Kernel } from '../kernel/kernel.js';
import { type ErrorAction, type IoStatus, errorAction, ioStatusFor } from './error-policy.js';
import { type AnyQmpEvent, type EventData, type EventName, makeEvent } from './events.js';
import { type JobStatus, type JobVerb, JobError, checkTransition, checkVerb } from './job-states.js';
import { type MirrorOptions, type ResolvedOptions, MAX_IN_FLIGHT, OptionError, ioLimits, resolveOptions } from './options.js';
import { RateLimit } from './rate-limit.js';
import type { BlockJobInfo, CellState, Checkpointer, FailedRange, JobOutcome, JobResult, JobStats, MirrorJobParams } from './types.js';

type OpKind = 'copy' | 'zero' | 'discard' | 'active-write';

interface Op {
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

interface Backoff {
  firstChunk: number;
  nbChunks: number;
  until: number;
}

const BACKOFF_FIRST_MS = 10;
const BACKOFF_MAX_MS = 1000;
const PROGRESS_INTERVAL_MS = 100;
const HISTORY_LIMIT = 1000;
/** The backoff counter of target flushes (chunk indices are never negative). */
const FLUSH_KEY = -1;
/** Bytes before level 0 in a serialized bitmap (see DirtyBitmap.serialize). */
const SERIAL_HEADER = 16;
/** Block status is asked in pieces of at most this many bytes during the initial scan. */
const DIRTY_INIT_STEP = 1 << 30;

export class MirrorJob {
  readonly id: string;
  readonly options: ResolvedOptions;
  readonly size: number;
  readonly granularity: number;
  readonly nbChunks: number;

  private statusValue: JobStatus = 'undefined';
  private readonly dirty: DirtyBitmap;
  private readonly inFlight: DirtyBitmap;
  private readonly backingOff: DirtyBitmap;
  /** Chunks the job wrote data to: no longer known to read as zero. */
  private readonly written: DirtyBitmap | null;
  /** Chunks last copied as zeroes (for the picture only). */
  private readonly zeroChunks: DirtyBitmap;

  private readonly pool: BufferPool;
  private readonly opBytes: number;
  private readonly ops = new Set<Op>();
  private readonly rate: RateLimit;
  private readonly backoffs: Backoff[] = [];
  private readonly attempts = new Map<number, number>();
  private readonly failedRanges = new Map<number, FailedRange>();

  private offsetDone = 0;
  private bytesRead = 0;
  private bytesWritten = 0;
  private ioStatus: IoStatus = 'ok';
  private isReady = false;
  private pauseCount = 0;
  private userPaused = false;
  private cancelRequested = false;
  /** The process is about to exit (halt): nothing new is issued. */
  private halted = false;
  private completeRequested = false;
  private finalizeRequested = false;
  private dismissRequested = false;
  private writesClosed = false;
  private failure: BlockError | null = null;
  private busy = false;
  private started = false;
  private activeWrites = 0;
  private waiter: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastProgress = 0;
  private lastCheckpoint = 0;
  private resultValue: JobResult | null = null;
  private readonly finished: Promise<JobResult>;
  private resolveFinished!: (r: JobResult) => void;
  private readonly history: AnyQmpEvent[] = [];
  private readonly listeners = new Set<(e: AnyQmpEvent) => void>();
  private readonly progressListeners = new Set<(info: BlockJobInfo) => void>();
  private readonly now: () => number;

  private constructor(
    readonly source: ImageFormat,
    readonly target: ImageFormat,
    options: ResolvedOptions,
    private readonly kernel: Kernel,
    private readonly checkpointer: Checkpointer | undefined,
    private readonly checkpointIntervalMs: number,
    now: () => number,
  ) {
    this.options = options;
    this.id = options.id;
    this.size = source.size;
    this.granularity = options.granularity;
    this.nbChunks = Math.ceil(this.size / this.granularity);
    this.now = now;
    this.rate = new RateLimit(options.speed);
    const { opBytes, nbBuffers } = ioLimits(options.granularity, options.bufSize);
    this.opBytes = opBytes;
    // Everything in linear memory is sized here, before any I/O: views stay valid.
    this.dirty = kernel.newBitmap(this.nbChunks);
    this.inFlight = kernel.newBitmap(this.nbChunks);
    this.backingOff = kernel.newBitmap(this.nbChunks);
    this.written = options.targetIsZero ? kernel.newBitmap(this.nbChunks) : null;
    this.zeroChunks = kernel.newBitmap(this.nbChunks);
    this.pool = kernel.newPool(opBytes, nbBuffers);
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
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
    const kernel = params.kernel ?? (await Kernel.create());
    const job = new MirrorJob(
      source,
      target,
      options,
      kernel,
      params.checkpointer,
      (params.checkpointIntervalSeconds ?? 5) * 1000,
      params.now ?? (() => Date.now()),
    );
    if (params.resume) {
      // A resumed job starts a new count: its len is what is still dirty.
      job.dirty.deserialize(params.resume.bitmap);
    }
    job.setStatus('created');
    job.resuming = Boolean(params.resume);
    return job;
  }

  private resuming = false;
  /** The initial scan is complete (or was not needed): checkpoints describe the whole image. */
  private scanned = false;
  private scanEnded!: () => void;
  /** Settles once the scan is complete, or the job ended without one. */
  private readonly scanSettled = new Promise<void>((resolve) => (this.scanEnded = resolve));
  /** Background source writes under way: their chunks count as dirty in checkpoints. */
  private readonly pendingWrites = new Map<number, { first: number; nb: number; done: Promise<void> }>();
  private nextWrite = 0;
  /** A source write happened since the last checkpoint: flush the source too. */
  private sourceWritten = false;
  /** The kernel memory is freed once the job concluded; counts read as zero from then on. */
  private released = false;

  // ---- observation ---------------------------------------------------------

  get status(): JobStatus {
    return this.statusValue;
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** Resolves when the job has concluded (and been dismissed if auto-dismiss). */
  get result(): Promise<JobResult> {
    return this.finished;
  }

  /** Listens to events; with `replay`, first hears the ones already sent (the job keeps the last 1000). */
  on(listener: (event: AnyQmpEvent) => void, options: { replay?: boolean } = {}): () => void {
    if (options.replay) for (const e of this.history) listener(e);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Progress snapshots, at most every 100 ms while data moves, and at each status change. */
  onProgress(listener: (info: BlockJobInfo) => void): () => void {
    this.progressListeners.add(listener);
    return () => this.progressListeners.delete(listener);
  }

  query(): BlockJobInfo {
    const info: BlockJobInfo = {
      type: 'mirror',
      device: this.id,
      len: this.len,
      offset: this.offsetDone,
      busy: this.busy,
      paused: this.pauseCount > 0,
      speed: this.rate.speed,
      'io-status': this.ioStatus,
      ready: this.isReady,
      status: this.statusValue,
      'auto-finalize': this.options.autoFinalize,
      'auto-dismiss': this.options.autoDismiss,
    };
    if (this.resultValue?.error) info.error = this.resultValue.error;
    return info;
  }

  stats(): JobStats {
    let inFlightBytes = 0;
    for (const op of this.ops) if (!op.settled) inFlightBytes += op.bytes;
    return {
      granularity: this.granularity,
      nbChunks: this.nbChunks,
      dirtyChunks: this.released ? 0 : this.dirty.count,
      dirtyBytes: this.dirtyBytes(),
      inFlightOps: this.ops.size,
      inFlightBytes,
      failed: [...this.failedRanges.values()].map((f) => ({ ...f })),
      bytesDone: this.offsetDone,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
    };
  }

  /**
   * A picture of the bitmap in `cells` cells, each covering an equal share
   * of the chunks: failed beats in flight beats dirty beats clean.
   */
  picture(cells: number): CellState[] {
    const out: CellState[] = [];
    if (this.released) return out;
    const perCell = Math.max(1, Math.ceil(this.nbChunks / Math.max(1, cells)));
    // Failed ranges as chunk spans; nothing is allocated in kernel memory while I/O may be in flight.
    const failed = [...this.failedRanges.values()].map((f) => {
      const first = Math.floor(f.offset / this.granularity);
      return [first, first + Math.max(1, Math.ceil(f.bytes / this.granularity))] as const;
    });
    for (let first = 0; first < this.nbChunks; first += perCell) {
      const end = first + perCell;
      if (failed.some(([a, b]) => a < end && first < b)) out.push('failed');
      else if (this.inFlight.countRange(first, perCell) > 0) out.push('inflight');
      else if (this.dirty.countRange(first, perCell) > 0) out.push('dirty');
      else if (this.zeroChunks.countRange(first, perCell) === Math.min(perCell, this.nbChunks - first)) out.push('zero');
      else out.push('clean');
    }
    return out;
  }

  /** The dirty bitmap as stored in checkpoints. */
  serializeBitmap(): Uint8Array {
    if (this.released) throw new JobError(`Job '${this.id}' has concluded; it has no bitmap any more`);
    // Chunks in flight, and chunks a source write is changing, are not clean yet.
    // The union is built here, not in kernel memory: no allocation may grow
    // linear memory (and detach the views of I/O under way) while the job runs.
    const out = this.dirty.serialize();
    const inFlight = this.inFlight.serialize();
    for (let i = SERIAL_HEADER; i < out.length; i++) out[i]! |= inFlight[i]!;
    for (const w of this.pendingWrites.values()) {
      for (let c = w.first; c < Math.min(w.first + w.nb, this.nbChunks); c++) out[SERIAL_HEADER + (c >>> 3)]! |= 1 << (c & 7);
    }
    return out;
  }

  private get len(): number {
    let inFlightBytes = 0;
    // Active writes count too while under way (QEMU: active_write_bytes_in_flight).
    for (const op of this.ops) if (!op.settled) inFlightBytes += op.bytes;
    return this.offsetDone + this.dirtyBytes() + inFlightBytes;
  }

  /** Dirty chunks as bytes, whole chunks (QEMU's bdrv_get_dirty_count: a dirty partial last chunk counts whole). */
  private dirtyBytes(): number {
    if (this.released) return 0;
    return this.dirty.count * this.granularity;
  }

  // ---- verbs ---------------------------------------------------------------

  /** Starts the job (created -> running). */
  start(): void {
    if (this.started) throw new JobError(`Job '${this.id}' has already been started`);
    this.started = true;
    void this.run();
  }

  pause(): void {
    checkVerb(this.id, 'pause', this.statusValue);
    if (this.userPaused) throw new JobError('Job is already paused');
    this.userPaused = true;
    this.pauseCount++;
    this.kick();
  }

  resume(): void {
    if (!this.userPaused) throw new JobError(`Can't resume a job that was not paused`);
    checkVerb(this.id, 'resume', this.statusValue);
    this.userPaused = false;
    this.pauseCount--;
    this.ioStatus = 'ok';
    this.kick();
  }

  /**
   * Cancels. Before READY, or with `force`, the job is cancelled and the
   * target left as it is (BLOCK_JOB_CANCELLED). After READY without force,
   * the job finishes its copy without switching over (BLOCK_JOB_COMPLETED).
   */
  cancel(force = true): void {
    checkVerb(this.id, 'cancel', this.statusValue);
    if (!force && this.isReady && !this.cancelRequested) {
      this.completeRequested = true;
    } else {
      // Before READY every cancel is a force cancel (QEMU's mirror_cancel); a force is never undone.
      this.cancelRequested = true;
      // A cancelled job leaves its pause so it can wind down.
      if (this.userPaused) {
        this.userPaused = false;
        this.pauseCount--;
        this.ioStatus = 'ok';
      }
    }
    // Never started: it concludes at once, as QEMU's never-started jobs do.
    if (!this.started) {
      this.started = true;
      void this.conclude('cancelled');
      return;
    }
    this.kick();
  }

  /** block-job-cancel: soft cancel is refused while the job is paused (by a user or a stop). */
  blockJobCancel(force: boolean): void {
    if (!force && this.userPaused) {
      checkVerb(this.id, 'cancel', this.statusValue);
      throw new JobError(`The block job for device '${this.id}' is currently paused`);
    }
    this.cancel(force);
  }

  complete(): void {
    checkVerb(this.id, 'complete', this.statusValue);
    if (this.cancelRequested) throw new JobError(`The active block job '${this.id}' cannot be completed`);
    this.completeRequested = true;
    this.kick();
  }

  setSpeed(bytesPerSecond: number): void {
    checkVerb(this.id, 'set-speed', this.statusValue);
    if (!Number.isSafeInteger(bytesPerSecond) || bytesPerSecond < 0) {
      throw new JobError(`Parameter 'speed' expects a non-negative value`);
    }
    this.rate.setSpeed(bytesPerSecond);
    this.kick();
  }

  finalize(): void {
    checkVerb(this.id, 'finalize', this.statusValue);
    this.finalizeRequested = true;
    this.kick();
  }

  dismiss(): void {
    checkVerb(this.id, 'dismiss', this.statusValue);
    this.dismissRequested = true;
    this.kick();
  }

  /**
   * A completion that needs nothing but its final flush is under way: in
   * QEMU it finishes within one main-loop iteration, before the monitor
   * looks at another command, so a cancel cannot overtake it.
   */
  get completing(): boolean {
    if (!this.completeRequested || this.cancelRequested) return false;
    const s = this.statusValue;
    if (s === 'waiting' || (s === 'pending' && this.options.autoFinalize)) return true;
    // In standby with no pause left, a resume was just asked: the job is on its way back to ready.
    return (s === 'ready' || s === 'standby') && this.pauseCount === 0 && !this.released && this.dirty.count === 0 && this.ops.size === 0 && this.activeWrites === 0;
  }

  /** Resolves once `completing` no longer holds (the job concluded, or the completion met something). */
  async completionSettled(): Promise<void> {
    while (this.completing) {
      await new Promise<void>((resolve) => {
        const off = this.on(() => {
          off();
          resolve();
        });
        void this.finished.then(() => {
          off();
          resolve();
        });
      });
    }
    // Concluded on its way to being dismissed: by the time the monitor looked again, QEMU's job was gone.
    if (this.statusValue === 'null' || (this.statusValue === 'concluded' && this.options.autoDismiss)) await this.finished;
  }

  /**
   * Waits (at most `maxMs`) until the verbs already accepted have taken
   * effect, as they have in QEMU by the time its monitor reads the next
   * command (the job runs in between): a pause has paused it, a resume
   * resumed it, a completion that needs only its flush has completed. (A
   * cancel is not waited for: QEMU ends a cancelled job only after the
   * monitor has read the next command.) The bound keeps a stuck I/O from holding commands
   * (a force cancel among them) back.
   */
  async settle(maxMs = 1000): Promise<void> {
    const deadline = Date.now() + maxMs;
    while (!this.settledNow()) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          off();
          clearTimeout(timer);
          resolve();
        };
        const off = this.on(done);
        const timer = setTimeout(done, left);
        void this.finished.then(done);
      });
    }
  }

  private settledNow(): boolean {
    if (!this.started || this.resultValue !== null) return true;
    const s = this.statusValue;
    if (s === 'null') return false; // dismissed, its result a moment away
    if (s === 'concluded') return !this.options.autoDismiss;
    // A cancel winds down after the next command is read (QEMU ends the job in a bottom half): not waited for.
    if (this.cancelRequested) return true;
    if (this.failure || this.completing) return false;
    if (s === 'pending' && !this.options.autoFinalize) return true;
    if (this.pauseCount > 0) return s === 'paused' || s === 'standby';
    return s !== 'paused' && s !== 'standby';
  }

  /** Whether `verb` is allowed now (the UI enables buttons with this). */
  allows(verb: JobVerb): boolean {
    try {
      checkVerb(this.id, verb, this.statusValue);
      return true;
    } catch {
      return false;
    }
  }

  // ---- source writes (a guest, or any program embedding the job) ---------------

  /**
   * Writes guest data to the source through the job. In background mode the
   * range is marked dirty after the write; in write-blocking mode the data is
   * also written to the target before this returns (a failed target write
   * marks the range dirty and goes to on-target-error; the source write still
   * succeeds).
   */
  async sourceWrite(offset: number, data: Uint8Array): Promise<void> {
    checkRequest('write', offset, data.length, this.size, true);
    if (this.writesClosed || this.statusValue === 'concluded' || this.statusValue === 'null' || this.statusValue === 'aborting') {
      throw new BlockError('EBUSY', 'write', offset, data.length, `job '${this.id}' has finished with the source; writes go elsewhere now`);
    }
    if (data.length === 0) return;
    // A checkpoint under way stamps the source after it took the bitmap: a write landing in between
    // would be in the stamp and not in the bitmap. Writes wait for it (the check and the dirtying
    // below happen in one synchronous step).
    while (this.checkpointing) await this.checkpointing;
    if (this.writesClosed) throw new BlockError('EBUSY', 'write', offset, data.length, `job '${this.id}' has finished with the source; writes go elsewhere now`);
    const firstChunk = Math.floor(offset / this.granularity);
    const endChunk = Math.ceil((offset + data.length) / this.granularity);
    this.sourceWritten = true;
    // Until it lands, the range counts as dirty in checkpoints, whatever the loop does with the bits.
    const id = this.nextWrite++;
    let landed!: () => void;
    this.pendingWrites.set(id, { first: firstChunk, nb: endChunk - firstChunk, done: new Promise<void>((r) => (landed = r)) });
    try {
      if (this.options.copyMode === 'background' || !this.started) await this.backgroundWrite(offset, data, firstChunk, endChunk);
      else await this.blockingWrite(offset, data, firstChunk, endChunk);
    } finally {
      this.pendingWrites.delete(id);
      landed();
      this.kick();
    }
  }

  /**
   * Dirty before (so the loop re-copies whatever it takes meanwhile) and
   * after (a copy may have taken the old bytes in between).
   */
  private async backgroundWrite(offset: number, data: Uint8Array, firstChunk: number, endChunk: number): Promise<void> {
    this.dirty.set(firstChunk, endChunk - firstChunk);
    this.activeWrites++;
    try {
      await this.source.write(offset, data);
    } finally {
      this.activeWrites--;
      if (!this.released) this.dirty.set(firstChunk, endChunk - firstChunk);
    }
  }

  /** Write-blocking: wait for operations on these chunks, then hold them while both sides are written. */
  private async blockingWrite(offset: number, data: Uint8Array, firstChunk: number, endChunk: number): Promise<void> {
    const op = await this.addOpWhenFree('active-write', firstChunk, endChunk - firstChunk, offset, data.length);
    let sourceError: unknown;
    this.activeWrites++;
    try {
      await op.run(async () => {
        try {
          await this.source.write(offset, data);
        } catch (err) {
          // The guest's write failed: it hears so, and whatever part landed is copied later.
          sourceError = err;
          this.dirty.set(firstChunk, endChunk - firstChunk);
          return;
        }
        try {
          this.markWritten(firstChunk, endChunk - firstChunk);
          await this.target.write(offset, data);
          this.bytesWritten += data.length;
          // As QEMU's do_sync_target_write: the write counts as progress (it was counted in len while under way).
          this.offsetDone += data.length;
          op.settled = true;
          // Chunks wholly covered are now equal on both sides; edge chunks keep their state.
          const end = offset + data.length;
          const fullFirst = Math.ceil(offset / this.granularity);
          const fullEnd = end === this.size ? this.nbChunks : Math.floor(end / this.granularity);
          if (fullEnd > fullFirst) this.dirty.reset(fullFirst, fullEnd - fullFirst);
        } catch (err) {
          const error = toBlockError(err, 'write', offset, data.length);
          this.dirty.set(firstChunk, endChunk - firstChunk);
          op.settled = true;
          this.onIoError('target', 'write', error, firstChunk, endChunk - firstChunk);
        }
      });
    } finally {
      this.activeWrites--;
    }
    if (sourceError !== undefined) throw toBlockError(sourceError, 'write', offset, data.length);
  }

  // ---- the loop ---------------------------------------------------------------

  private async run(): Promise<void> {
    let outcome: JobOutcome = 'completed';
    try {
      this.setStatus('running');
      this.busy = true;
      if (!this.resuming) await this.dirtyInit();
      // Until the scan is done the bitmap is incomplete: no checkpoint may be taken before this.
      this.scanned = true;
      this.scanEnded();
      // The first checkpoint lands before any data moves: from here on, an interruption can resume.
      // It calls nothing clean that this job wrote, so it needs no flush of the target.
      if (this.checkpointer && !this.cancelRequested && !this.failure) {
        this.lastCheckpoint = this.now();
        await this.saveCheckpoint({ flush: false });
      }
      if (!this.cancelRequested && !this.failure) await this.copyLoop();
    } catch (err) {
      // An error outside any policy (a bug, or the initial scan failing) fails the job.
      this.failure ??= toBlockError(err, 'read', 0, 0);
    }
    this.scanEnded();
    await this.drain();
    this.busy = false;
    if (this.failure) outcome = 'failed';
    else if (this.cancelRequested) outcome = 'cancelled';
    await this.conclude(outcome);
  }

  /** Phase 1: mark what the source holds (as sync says) dirty. */
  private async dirtyInit(): Promise<void> {
    const { sync, targetIsZero } = this.options;
    if (sync === 'none') return;
    for (let offset = 0; offset < this.size; ) {
      if (this.cancelRequested) return;
      await this.pausePoint();
      const status = await this.source.blockStatus(offset, Math.min(DIRTY_INIT_STEP, this.size - offset));
      if (status.bytes <= 0) throw new BlockError('EIO', 'read', offset, 0, 'block status made no progress');
      const allocatedHere = status.depth === 0 && status.kind !== 'unallocated';
      const wanted =
        sync === 'top'
          ? allocatedHere
          : status.kind === 'data' || !targetIsZero; // zeroes need writing only on a target that is not zero
      const first = Math.floor(offset / this.granularity);
      const end = Math.ceil((offset + status.bytes) / this.granularity);
      if (wanted) this.dirty.set(first, end - first);
      else if (status.kind !== 'data' && targetIsZero) this.zeroChunks.set(first, end - first);
      offset += status.bytes;
    }
  }

  /** Phase 2 and 3: copy until READY, then keep up until completed or cancelled. */
  private async copyLoop(): Promise<void> {
    let cursor = 0;
    for (;;) {
      if (this.failure || this.cancelRequested) return;
      if (this.halted) {
        this.busy = false;
        await this.sleep();
        continue;
      }
      await this.pausePoint();
      if (this.failure || this.cancelRequested) return;
      // The speed limit is paid after dispatching, as in QEMU: before more is issued, and before READY.
      if (!this.isReady || this.completeRequested) {
        if (await this.rateSleep()) continue;
      }
      this.expireBackoffs();
      this.maybeCheckpoint();

      if (this.dirty.count === 0 && this.ops.size === 0 && this.activeWrites === 0) {
        if (!this.isReady || this.completeRequested) {
          if (this.completeRequested) this.writesClosed = true;
          const flushed = await this.flushTarget();
          if (this.failure) return;
          if (!flushed) {
            this.writesClosed = false;
            await this.sleep(this.backoffDelay(FLUSH_KEY));
            continue;
          }
          // Source writes may have landed while the flush ran, or a cancel arrived.
          if (this.dirty.count !== 0 || this.ops.size !== 0 || this.activeWrites !== 0 || this.cancelRequested) {
            this.writesClosed = false;
            continue;
          }
          if (this.completeRequested) return;
          this.setReady();
          continue;
        }
        this.busy = false;
        await this.sleep();
        this.busy = true;
        continue;
      }

      // Issue operations while there is room.
      let waitMs: number | undefined;
      while (this.ops.size < MAX_IN_FLIGHT && !this.pauseRequested() && !this.cancelRequested && !this.failure) {
        const run = this.nextIssuable(cursor) ?? (cursor > 0 ? this.nextIssuable(0) : null);
        if (!run) {
          waitMs = this.nextBackoffExpiry();
          break;
        }
        // The speed limit: nothing more is dispatched once the slice is paid beyond (rateSleep waits it out).
        if (this.rate.account(0, this.now()) > 0) break;
        if (!this.issue(run.start, run.length)) break; // no free buffer: wait for one
        this.rate.account(Math.min(run.length * this.granularity, this.size - run.start * this.granularity), this.now());
        cursor = run.start + run.length;
        if (cursor >= this.nbChunks) cursor = 0;
      }
      await this.sleep(waitMs);
    }
  }

  private pauseRequested(): boolean {
    return this.pauseCount > 0;
  }

  /**
   * Sleeps while what was dispatched is over the speed limit (not busy, as
   * QEMU's job_sleep_ns). True if it slept (the loop then looks again).
   */
  private async rateSleep(): Promise<boolean> {
    let slept = false;
    for (;;) {
      const waitMs = this.rate.account(0, this.now());
      if (waitMs <= 0 || this.cancelRequested || this.failure || this.pauseRequested() || this.halted) return slept;
      slept = true;
      this.busy = false;
      await this.sleep(waitMs);
      this.busy = true;
    }
  }

  /** Pauses here while paused: drain first, then PAUSED (or STANDBY when ready). */
  private async pausePoint(): Promise<void> {
    if (!this.pauseRequested() || this.cancelRequested) return;
    await this.drain();
    if (!this.pauseRequested() || this.cancelRequested || this.failure) return;
    const resumeTo: JobStatus = this.isReady ? 'ready' : 'running';
    this.setStatus(this.isReady ? 'standby' : 'paused');
    this.busy = false;
    await this.saveCheckpoint();
    while (this.pauseRequested() && !this.cancelRequested && !this.failure) await this.sleep();
    this.busy = true;
    this.setStatus(resumeTo);
  }

  /** The next run of dirty chunks that is neither in flight nor backing off. */
  private nextIssuable(from: number): { start: number; length: number } | null {
    const maxChunks = Math.max(1, Math.floor(this.opBytes / this.granularity));
    let pos = from;
    while (pos < this.nbChunks) {
      const d = this.dirty.nextDirty(pos);
      if (d < 0) return null;
      if (this.inFlight.get(d)) {
        pos = this.inFlight.nextClean(d);
        if (pos < 0) return null;
        continue;
      }
      if (this.backingOff.get(d)) {
        pos = this.backingOff.nextClean(d);
        if (pos < 0) return null;
        continue;
      }
      const run = this.dirty.nextDirtyRun(d, maxChunks)!;
      let end = run.start + run.length;
      const f = this.inFlight.nextDirty(d);
      if (f >= 0 && f < end) end = f;
      const b = this.backingOff.nextDirty(d);
      if (b >= 0 && b < end) end = b;
      return { start: d, length: end - d };
    }
    return null;
  }

  /** Starts one operation on [first, first + nb) chunks; false when no buffer is free. */
  private issue(first: number, nb: number): boolean {
    const buffer = this.pool.take();
    if (!buffer) return false;
    const offset = first * this.granularity;
    const bytes = Math.min(nb * this.granularity, this.size - offset);
    // Clear before the I/O: a source write from now on dirties the chunks again.
    this.dirty.reset(first, nb);
    const op = this.addOp('copy', first, nb, offset, bytes);
    // The buffer goes back to the pool before the loop is woken, so the wake-up finds it free.
    void op.run(() => this.perform(op, buffer), () => this.pool.give(buffer));
    return true;
  }

  private addOp(kind: OpKind, firstChunk: number, nbChunks: number, offset: number, bytes: number): Op {
    this.inFlight.set(firstChunk, nbChunks);
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
          // Bodies handle their own I/O errors; anything else is a bug: fail the job, keep the range.
          this.dirty.set(firstChunk, nbChunks);
          this.failure ??= toBlockError(err, 'write', offset, bytes);
        } finally {
          this.ops.delete(op);
          this.inFlight.reset(firstChunk, nbChunks);
          // Another op may share edge chunks with an active write: keep theirs marked.
          for (const other of this.ops) this.inFlight.set(other.firstChunk, other.nbChunks);
          release?.();
          resolve();
          this.emitProgress(false);
          this.kick();
        }
      },
    };
    this.ops.add(op);
    return op;
  }

  /**
   * Adds an op once no other op overlaps its chunks. The check and the add
   * happen in one synchronous step, so two waiters cannot both get in.
   */
  private async addOpWhenFree(kind: OpKind, first: number, nb: number, offset: number, bytes: number): Promise<Op> {
    for (;;) {
      const conflict = [...this.ops].find((op) => op.firstChunk < first + nb && first < op.firstChunk + op.nbChunks);
      if (!conflict) return this.addOp(kind, first, nb, offset, bytes);
      await conflict.done;
    }
  }

  /** One operation: decide by block status, then copy, zero or discard. */
  private async perform(op: Op, buffer: { ptr: number; bytes: number }): Promise<void> {
    let { offset, bytes } = op;
    const g = this.granularity;
    let kind: 'copy' | 'zero' | 'deallocate' = 'copy';
    try {
      const status = await this.source.blockStatus(offset, bytes);
      // A status shorter than one chunk: copy the chunk, whatever it holds.
      const statusBytes = status.bytes >= bytes ? bytes : Math.floor(status.bytes / g) * g;
      if (statusBytes >= g || statusBytes === bytes) {
        if (status.kind !== 'data' && this.options.sync !== 'top') kind = 'zero';
        // sync=top: what the backing chain holds stays there (the target reads it through the same backing file).
        else if (this.options.sync === 'top' && status.depth > 0) kind = this.target.deallocate ? 'deallocate' : 'copy';
        else if (status.kind === 'zero') kind = 'zero';
        if (statusBytes < bytes) {
          // Give back the chunks past the extent: they are dirty again, for a later op.
          const keepChunks = statusBytes / g;
          this.dirty.set(op.firstChunk + keepChunks, op.nbChunks - keepChunks);
          this.inFlight.reset(op.firstChunk + keepChunks, op.nbChunks - keepChunks);
          op.nbChunks = keepChunks;
          op.bytes = bytes = statusBytes;
        }
      }
    } catch {
      // No status (a metadata read failed): copy, and let the read report the error.
    }

    // Only copies count against the speed limit; zeroes and deallocations cost nothing (QEMU: write_zeroes_ok).
    if (kind !== 'copy') this.rate.refund(op.bytes);
    if (kind === 'zero') {
      await this.zeroRange(op, op.firstChunk, op.nbChunks);
      return;
    }
    if (kind === 'deallocate') {
      try {
        this.markWritten(op.firstChunk, op.nbChunks);
        await this.target.deallocate!(offset, bytes);
        this.succeeded(op);
      } catch (err) {
        this.failed('target', 'write', toBlockError(err, 'discard', offset, bytes), op);
      }
      return;
    }

    // Copy: read straight into kernel memory.
    try {
      await this.source.read(offset, this.pool.view(buffer, bytes));
      this.bytesRead += bytes;
    } catch (err) {
      this.failed('source', 'read', toBlockError(err, 'read', offset, bytes), op);
      return;
    }
    // Write runs of non-zero chunks; runs of zero chunks become zero writes (or nothing).
    try {
      let i = 0;
      while (i < op.nbChunks) {
        const zero = this.chunkIsZero(buffer.ptr, i, bytes);
        let j = i + 1;
        while (j < op.nbChunks && this.chunkIsZero(buffer.ptr, j, bytes) === zero) j++;
        const runOffset = offset + i * g;
        const runBytes = Math.min(j * g, bytes) - i * g;
        if (zero) {
          await this.writeZeroesIfNeeded(op.firstChunk + i, j - i, runOffset, runBytes);
        } else {
          this.markWritten(op.firstChunk + i, j - i);
          await this.target.write(runOffset, this.pool.view(buffer, bytes).subarray(i * g, i * g + runBytes));
          this.bytesWritten += runBytes;
        }
        i = j;
      }
    } catch (err) {
      this.failed('target', 'write', toBlockError(err, 'write', offset, bytes), op);
      return;
    }
    this.succeeded(op);
  }

  private chunkIsZero(ptr: number, index: number, bytes: number): boolean {
    const start = index * this.granularity;
    return this.kernel.isZero(ptr + start, Math.min(this.granularity, bytes - start));
  }

  private async zeroRange(op: Op, first: number, nb: number): Promise<void> {
    const offset = first * this.granularity;
    const bytes = Math.min(nb * this.granularity, this.size - offset);
    try {
      await this.writeZeroesIfNeeded(first, nb, offset, bytes);
    } catch (err) {
      this.failed('target', 'write', toBlockError(err, 'write', offset, bytes), op);
      return;
    }
    this.succeeded(op);
  }

  /** Zeroes a range on the target, unless the target is known to read zero there. */
  private async writeZeroesIfNeeded(first: number, nb: number, offset: number, bytes: number): Promise<void> {
    if (this.written && this.written.countRange(first, nb) === 0) {
      this.zeroChunks.set(first, nb);
      return;
    }
    await this.target.writeZeroes(offset, bytes, { unmap: this.options.unmap });
    this.written?.reset(first, nb);
    this.zeroChunks.set(first, nb);
    this.bytesWritten += bytes;
  }

  private markWritten(first: number, nb: number): void {
    this.written?.set(first, nb);
    this.zeroChunks.reset(first, nb);
  }

  /** An op's work is done: count it (offset grows only here) and stop counting it in flight. */
  private succeeded(op: Op): void {
    const first = op.firstChunk;
    const nb = op.nbChunks;
    op.settled = true;
    this.offsetDone += op.bytes;
    this.attempts.delete(first);
    if (this.failedRanges.size > 0) {
      for (const [key, f] of this.failedRanges) {
        const fFirst = Math.floor(f.offset / this.granularity);
        const fEnd = Math.ceil((f.offset + f.bytes) / this.granularity);
        if (fFirst >= first && fEnd <= first + nb) this.failedRanges.delete(key);
      }
    }
  }

  /** A failed operation: the range is dirty again first, then the policy decides. */
  private failed(side: 'source' | 'target', operation: 'read' | 'write', error: BlockError, op: Op): void {
    op.settled = true;
    this.dirty.set(op.firstChunk, op.nbChunks);
    this.onIoError(side, operation, error, op.firstChunk, op.nbChunks);
  }

  private onIoError(side: 'source' | 'target', operation: 'read' | 'write', error: BlockError, first: number, nb: number): ErrorAction {
    const policy = side === 'source' ? this.options.onSourceError : this.options.onTargetError;
    const action = errorAction(policy, error.code);
    const offset = first * this.granularity;
    const bytes = Math.max(0, Math.min(nb * this.granularity, this.size - offset));
    // A flush has no range: it is not a failed range of the picture, nor does it back off a chunk.
    if (nb > 0) {
      const prior = this.failedRanges.get(first);
      this.failedRanges.set(first, { offset, bytes, side, errno: error.code, attempts: (prior?.attempts ?? 0) + 1 });
    }
    if (action === 'stop') {
      if (!this.userPaused) {
        this.userPaused = true;
        this.pauseCount++;
      }
      if (this.ioStatus === 'ok') this.ioStatus = ioStatusFor(error.code); // the first error wins
    }
    this.emit('BLOCK_JOB_ERROR', {
      device: this.id,
      operation,
      action,
      errno: error.code,
      offset,
      bytes,
      message: error.message,
    });
    if (action === 'report') this.failure ??= error;
    if (action === 'ignore' && nb > 0) this.startBackoff(first, nb);
    this.kick();
    return action;
  }

  /** Under `ignore`, a failed range waits a little longer each time before its retry. */
  private startBackoff(first: number, nb: number): void {
    const delay = this.backoffDelay(first);
    this.backingOff.set(first, nb);
    this.backoffs.push({ firstChunk: first, nbChunks: nb, until: this.now() + delay });
  }

  private backoffDelay(key: number): number {
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (n - 1));
  }

  private expireBackoffs(): void {
    if (this.backoffs.length === 0) return;
    const now = this.now();
    for (let i = this.backoffs.length - 1; i >= 0; i--) {
      const b = this.backoffs[i]!;
      if (b.until <= now) {
        this.backingOff.reset(b.firstChunk, b.nbChunks);
        this.backoffs.splice(i, 1);
      }
    }
    // Overlapping backoffs: keep the bits of those still waiting.
    for (const b of this.backoffs) this.backingOff.set(b.firstChunk, b.nbChunks);
  }

  private nextBackoffExpiry(): number | undefined {
    if (this.backoffs.length === 0) return undefined;
    const soonest = Math.min(...this.backoffs.map((b) => b.until));
    return Math.max(1, soonest - this.now());
  }

  /** Flushes the target; false (after the policy ran) if that failed. */
  private async flushTarget(): Promise<boolean> {
    try {
      await this.target.flush();
      this.attempts.delete(FLUSH_KEY);
      return true;
    } catch (err) {
      this.onIoError('target', 'write', toBlockError(err, 'flush', 0, 0), 0, 0);
      return false;
    }
  }

  private setReady(): void {
    this.isReady = true;
    this.setStatus('ready');
    this.emit('BLOCK_JOB_READY', this.progressData());
    void this.saveCheckpoint();
  }

  /** Waits for every operation in flight, source writes included. */
  private async drain(): Promise<void> {
    while (this.ops.size > 0 || this.pendingWrites.size > 0) {
      await Promise.all([...[...this.ops].map((op) => op.done), ...[...this.pendingWrites.values()].map((w) => w.done)]);
    }
  }

  private async conclude(outcome: JobOutcome): Promise<void> {
    if (this.statusValue === 'paused' || this.statusValue === 'standby') {
      this.setStatus(this.statusValue === 'paused' ? 'running' : 'ready');
    }
    const result: JobResult = { outcome };
    if (outcome === 'completed') {
      this.setStatus('waiting');
      this.setStatus('pending');
      if (!this.options.autoFinalize) {
        this.emit('BLOCK_JOB_PENDING', { type: 'mirror', id: this.id });
        while (!this.finalizeRequested && !this.cancelRequested) await this.sleep();
      }
      if (this.cancelRequested) {
        outcome = result.outcome = 'cancelled';
        this.setStatus('aborting');
        this.emit('BLOCK_JOB_CANCELLED', this.progressData());
      } else {
        this.emit('BLOCK_JOB_COMPLETED', this.progressData());
      }
    } else {
      this.setStatus('aborting');
      // A failed job can be resumed once its cause is fixed: keep its latest state.
      if (outcome === 'failed') await this.checkpoint();
      if (outcome === 'failed') {
        result.error = describeErrno(this.failure!.code); // strerror() text, as QEMU reports it
        result.errno = this.failure!.code;
        this.emit('BLOCK_JOB_COMPLETED', { ...this.progressData(), error: result.error });
      } else {
        this.emit('BLOCK_JOB_CANCELLED', this.progressData());
      }
    }
    this.resultValue = result;
    this.setStatus('concluded');
    this.releaseMemory();
    if (!this.options.autoDismiss) {
      while (!this.dismissRequested) await this.sleep();
    }
    this.setStatus('null');
    // A failed job keeps its checkpoint (fix the cause, then resume); a finished or cancelled one is done with it
    // (once a save under way has landed, so it cannot bring the file back).
    if (this.checkpointer && outcome !== 'failed') {
      await this.checkpointing;
      await this.checkpointer.remove(this.id).catch(() => {});
    }
    this.resolveFinished(result);
  }

  private releaseMemory(): void {
    this.released = true;
    this.dirty.free();
    this.inFlight.free();
    this.backingOff.free();
    this.written?.free();
    this.zeroChunks.free();
    this.pool.free();
  }

  // ---- checkpoints -------------------------------------------------------------

  private maybeCheckpoint(): void {
    if (!this.checkpointer) return;
    const now = this.now();
    if (now - this.lastCheckpoint < this.checkpointIntervalMs) return;
    this.lastCheckpoint = now;
    void this.saveCheckpoint();
  }

  private checkpointing: Promise<boolean> | null = null;

  /**
   * Flush the target (and the source, if the guest wrote to it), then store
   * the bitmap: a checkpoint never calls clean a chunk whose data is not
   * durable on both sides. Resolves with whether it was stored.
   */
  private async saveCheckpoint(options: { flush: boolean } = { flush: true }): Promise<boolean> {
    // Before the initial scan is complete the bitmap does not describe the image.
    if (!this.checkpointer || !this.scanned || this.released) return false;
    if (this.checkpointing) return this.checkpointing;
    const bitmap = this.serializeBitmap();
    const offset = this.offsetDone;
    const flushSource = this.sourceWritten;
    this.sourceWritten = false;
    const run = async (): Promise<boolean> => {
      try {
        if (flushSource) await this.source.flush();
        if (options.flush) {
          try {
            await this.target.flush();
          } catch (err) {
            // A failed flush is a target error like any other: its policy decides (QEMU meets it before READY).
            const s = this.statusValue;
            if (s === 'running' || s === 'ready' || s === 'paused' || s === 'standby') this.onIoError('target', 'write', toBlockError(err, 'flush', 0, 0), 0, 0);
            throw err;
          }
        }
        await this.checkpointer!.save({
          id: this.id,
          options: this.options,
          size: this.size,
          status: this.statusValue,
          offset,
          bitmap,
          savedAt: this.now(),
        });
        return true;
      } catch {
        // A checkpoint that cannot be written is skipped; the next one tries again.
        if (flushSource) this.sourceWritten = true;
        return false;
      } finally {
        this.checkpointing = null;
      }
    };
    this.checkpointing = run();
    return this.checkpointing;
  }

  /** Stores a checkpoint now (for a clean interruption: SIGINT, a closing tab); false if none could be. */
  async checkpoint(): Promise<boolean> {
    await this.checkpointing;
    return this.saveCheckpoint();
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

  // ---- plumbing ------------------------------------------------------------------

  private setStatus(next: JobStatus): void {
    checkTransition(this.id, this.statusValue, next);
    this.statusValue = next;
    this.emit('JOB_STATUS_CHANGE', { id: this.id, status: next });
    this.emitProgress(true);
  }

  private emit<N extends EventName>(name: N, data: EventData[N]): void {
    const event = makeEvent(name, data) as AnyQmpEvent;
    this.history.push(event);
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
    for (const listener of this.listeners) listener(event);
  }

  private emitProgress(force: boolean): void {
    if (this.progressListeners.size === 0) return;
    const now = this.now();
    if (!force && now - this.lastProgress < PROGRESS_INTERVAL_MS) return;
    this.lastProgress = now;
    const info = this.query();
    for (const listener of this.progressListeners) listener(info);
  }

  private progressData() {
    return { type: 'mirror' as const, device: this.id, len: this.len, offset: this.offsetDone, speed: this.rate.speed };
  }

  /**
   * Wakes the loop. A kick while the loop is not asleep (between two awaits)
   * is kept, and its next sleep returns at once: a verb or a finished op is
   * never lost.
   */
  private kick(): void {
    const waiter = this.waiter;
    this.waiter = null;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (waiter) waiter();
    else this.kickPending = true;
  }

  private kickPending = false;

  /** Sleeps until kicked (an op finished, a verb, a source write) or `ms` passed. */
  private sleep(ms?: number): Promise<void> {
    if (this.kickPending) {
      this.kickPending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiter = resolve;
      if (ms !== undefined) this.timer = setTimeout(() => this.kick(), ms);
    });
  }
}
