/**
 * A block job's life, as QEMU's job.c and blockjob.c keep it: its status
 * and the table of transitions, the verbs and when each is allowed, pause
 * counting and the pause point, READY, the walk from an outcome to null,
 * events (QMP-shaped) and progress snapshots, the speed limit, and what an
 * I/O error does under the side's policy (block_job_error_action). The
 * mirror itself (mirror-job.ts) is a Job with a body.
 *
 * The job's body is one loop that sleeps until kicked: a verb, a finished
 * operation or a source write kicks it; a kick while the loop is between
 * two awaits is kept for its next sleep, so none is lost.
 */
import { type BlockError, describeErrno } from '../block/block-device.js';
import { type ErrorAction, type IoStatus, type ErrorPolicy, errorAction, ioStatusFor } from './error-policy.js';
import { type AnyQmpEvent, type EventData, type EventName, makeEvent } from '../qapi/events.js';
import { type JobStatus, type JobVerb, JobError, checkTransition, checkVerb } from '../qapi/job-states.js';
import { RateLimit } from './rate-limit.js';
import type { BlockJobInfo, JobOutcome, JobResult } from './types.js';

const PROGRESS_INTERVAL_MS = 100;
const HISTORY_LIMIT = 1000;
/** Sleeps that may return at once in a row before one yields to the event loop. */
const QUICK_WAKES = 64;

/**
 * One turn of the event loop, through a message to itself: a macrotask, as
 * setTimeout(0) would be, without the 4 ms a worker adds to nested timers.
 */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    // onmessage (not addEventListener) also starts the port, in Node as in a browser; Node's types leave it out.
    (channel.port1 as unknown as { onmessage: (() => void) | null }).onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

export interface JobSettings {
  id: string;
  speed: number;
  autoFinalize: boolean;
  autoDismiss: boolean;
  now: () => number;
}

/** BLOCK_JOB_COMPLETED / CANCELLED / READY's data. */
export interface ProgressData {
  type: 'mirror';
  device: string;
  len: number;
  offset: number;
  speed: number;
}

export abstract class Job {
  readonly id: string;
  protected readonly rate: RateLimit;
  protected readonly now: () => number;
  protected readonly autoFinalize: boolean;
  protected readonly autoDismiss: boolean;

  protected statusValue: JobStatus = 'undefined';
  protected ioStatus: IoStatus = 'ok';
  protected isReady = false;
  protected busy = false;
  protected started = false;
  /** Pauses asked for (by a user or a stop); the job is paused while this is over 0. */
  protected pauseCount = 0;
  /** The one pause a user (or a stop) may hold; resume takes it back. */
  protected userPaused = false;
  protected cancelRequested = false;
  /** A cancel was accepted, soft or forced (after READY a soft one finishes the copy without switching over). */
  private cancelAccepted = false;
  protected completeRequested = false;
  /** The completion met an error on its way (its final flush failed): it is no longer one step away. */
  protected completionStalled = false;
  private finalizeRequested = false;
  private dismissRequested = false;
  protected resultValue: JobResult | null = null;
  private resolveFinished!: (r: JobResult) => void;
  private readonly finished = new Promise<JobResult>((resolve) => (this.resolveFinished = resolve));
  private readonly history: AnyQmpEvent[] = [];
  private readonly listeners = new Set<(e: AnyQmpEvent) => void>();
  private readonly progressListeners = new Set<(info: BlockJobInfo) => void>();
  private lastProgress = 0;
  /** A progress held back by the interval, to go at its end. */
  private progressTimer: ReturnType<typeof setTimeout> | null = null;
  private waiter: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private kickPending = false;
  /** Sleeps in a row that found a kick waiting. */
  private quickWakes = 0;

  protected constructor(settings: JobSettings) {
    this.id = settings.id;
    this.rate = new RateLimit(settings.speed);
    this.now = settings.now;
    this.autoFinalize = settings.autoFinalize;
    this.autoDismiss = settings.autoDismiss;
  }

  // ---- what the body provides -------------------------------------------------------

  /** The body: from running to an outcome (the job concludes with it). */
  protected abstract body(): Promise<JobOutcome>;
  /** len, offset and speed, for query-block-jobs and the events that carry them. */
  protected abstract progressData(): ProgressData;
  /** Waits for the I/O under way (QEMU's .pause and the drain before an end). */
  protected abstract drain(): Promise<void>;
  /** Nothing to copy, nothing in flight: a completion needs only its flush. */
  protected abstract get quiet(): boolean;
  /** The error that fails the job, once there is one. */
  protected abstract get failure(): BlockError | null;
  /** Called when the job has paused (after its I/O drained). */
  protected async onPaused(): Promise<void> {}
  /** Called on the way to concluding with `outcome`, before the event that announces it. */
  protected async beforeConclusion(_outcome: JobOutcome): Promise<void> {}
  /** Called once concluded (the job's resources may go). */
  protected onConcluded(): void {}
  /** Called at null, before the result settles. */
  protected async onGone(_outcome: JobOutcome): Promise<void> {}

  // ---- observation --------------------------------------------------------------------

  get status(): JobStatus {
    return this.statusValue;
  }

  /** What query-block-jobs says of the job (blockjob.c's block_job_query). */
  query(): BlockJobInfo {
    const { type, device, len, offset, speed } = this.progressData();
    const info: BlockJobInfo = {
      type,
      device,
      len,
      offset,
      busy: this.busy,
      paused: this.pauseCount > 0,
      speed,
      'io-status': this.ioStatus,
      ready: this.isReady,
      status: this.statusValue,
      'auto-finalize': this.autoFinalize,
      'auto-dismiss': this.autoDismiss,
    };
    if (this.resultValue?.error) info.error = this.resultValue.error;
    return info;
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

  /** Whether `verb` is allowed now (the UI enables buttons with this). */
  allows(verb: JobVerb): boolean {
    try {
      checkVerb(this.id, verb, this.statusValue);
      return true;
    } catch {
      return false;
    }
  }

  // ---- verbs ------------------------------------------------------------------------------

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
    // QEMU marks the job cancelled either way: a later complete is refused (job_complete checks job_cancel_requested).
    this.cancelAccepted = true;
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
    if (this.cancelAccepted) throw new JobError(`The active block job '${this.id}' cannot be completed`);
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

  // ---- between two commands ------------------------------------------------------------

  /**
   * A completion that needs nothing but its final flush is under way: in
   * QEMU it finishes within one main-loop iteration, before the monitor
   * looks at another command, so a cancel cannot overtake it.
   */
  get completing(): boolean {
    if (!this.completeRequested || this.cancelRequested || this.completionStalled) return false;
    const s = this.statusValue;
    if (s === 'waiting' || (s === 'pending' && this.autoFinalize)) return true;
    // In standby with no pause left, a resume was just asked: the job is on its way back to ready.
    return (s === 'ready' || s === 'standby') && this.pauseCount === 0 && this.quiet;
  }

  /** Resolves once `completing` no longer holds (the job concluded, or the completion met something). */
  async completionSettled(): Promise<void> {
    while (this.completing) await this.nextEvent();
    // Concluded on its way to being dismissed: by the time the monitor looked again, QEMU's job was gone.
    if (this.statusValue === 'null' || (this.statusValue === 'concluded' && this.autoDismiss)) await this.finished;
  }

  /**
   * Waits (at most `maxMs`) until the verbs already accepted have taken
   * effect, as they have in QEMU by the time its monitor reads the next
   * command (the job runs in between): a pause has paused it, a resume
   * resumed it, a completion that needs only its flush has completed. (A
   * cancel is not waited for: QEMU ends a cancelled job only after the
   * monitor has read the next command.) The bound keeps a stuck I/O from
   * holding commands (a force cancel among them) back.
   */
  async settle(maxMs = 1000): Promise<void> {
    const deadline = Date.now() + maxMs;
    while (!this.settledNow()) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await this.nextEvent(left);
    }
  }

  private settledNow(): boolean {
    if (!this.started || this.resultValue !== null) return true;
    const s = this.statusValue;
    if (s === 'null') return false; // dismissed, its result a moment away
    if (s === 'concluded') return !this.autoDismiss;
    // A cancel winds down after the next command is read (QEMU ends the job in a bottom half): not waited for.
    if (this.cancelRequested) return true;
    if (this.failure || this.completing) return false;
    if (s === 'pending' && !this.autoFinalize) return true;
    if (this.pauseCount > 0) return s === 'paused' || s === 'standby';
    return s !== 'paused' && s !== 'standby';
  }

  /** The next event, the end of the job, or `ms` passed, whichever comes first. */
  private nextEvent(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        off();
        if (timer) clearTimeout(timer);
        resolve();
      };
      const off = this.on(done);
      const timer = ms === undefined ? null : setTimeout(done, ms);
      void this.finished.then(done);
    });
  }

  // ---- the life -------------------------------------------------------------------------

  private async run(): Promise<void> {
    this.setStatus('running');
    this.busy = true;
    const outcome = await this.body();
    this.busy = false;
    await this.conclude(outcome);
  }

  protected pauseRequested(): boolean {
    return this.pauseCount > 0;
  }

  /** Pauses here while paused: drain first, then PAUSED (or STANDBY when ready). */
  protected async pausePoint(): Promise<void> {
    if (!this.pauseRequested() || this.cancelRequested) return;
    await this.drain();
    if (!this.pauseRequested() || this.cancelRequested || this.failure) return;
    const resumeTo: JobStatus = this.isReady ? 'ready' : 'running';
    this.setStatus(this.isReady ? 'standby' : 'paused');
    this.busy = false;
    await this.onPaused();
    while (this.pauseRequested() && !this.cancelRequested && !this.failure) await this.sleep();
    this.busy = true;
    this.setStatus(resumeTo);
  }

  protected transitionToReady(): void {
    this.isReady = true;
    this.setStatus('ready');
    this.emit('BLOCK_JOB_READY', this.progressData());
  }

  /** An I/O error under the side's policy (blockjob.c's block_job_error_action): the action, the event, a stop. */
  protected errorAction(policy: ErrorPolicy, operation: 'read' | 'write', error: BlockError, range: { offset: number; bytes: number }): ErrorAction {
    const action = errorAction(policy, error.code);
    if (action === 'stop') {
      if (!this.userPaused) {
        this.userPaused = true;
        this.pauseCount++;
      }
      if (this.ioStatus === 'ok') this.ioStatus = ioStatusFor(error.code); // the first error wins
    }
    this.emit('BLOCK_JOB_ERROR', { device: this.id, operation, action, errno: error.code, offset: range.offset, bytes: range.bytes, message: error.message });
    this.kick();
    return action;
  }

  /** From an outcome to null: WAITING, PENDING (finalize), or ABORTING; the event; CONCLUDED; NULL (dismiss). */
  protected async conclude(outcome: JobOutcome): Promise<void> {
    if (this.statusValue === 'paused' || this.statusValue === 'standby') {
      this.setStatus(this.statusValue === 'paused' ? 'running' : 'ready');
    }
    const result: JobResult = { outcome };
    if (outcome === 'completed') {
      this.setStatus('waiting');
      this.setStatus('pending');
      if (!this.autoFinalize) {
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
      await this.beforeConclusion(outcome);
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
    this.onConcluded();
    if (!this.autoDismiss) {
      while (!this.dismissRequested) await this.sleep();
    }
    this.setStatus('null');
    await this.onGone(outcome);
    this.resolveFinished(result);
  }

  // ---- events ------------------------------------------------------------------------------

  protected setStatus(next: JobStatus): void {
    checkTransition(this.id, this.statusValue, next);
    this.statusValue = next;
    this.emit('JOB_STATUS_CHANGE', { id: this.id, status: next });
    this.emitProgress(true);
  }

  protected emit<N extends EventName>(name: N, data: EventData[N]): void {
    const event = makeEvent(name, data) as AnyQmpEvent;
    this.history.push(event);
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
    for (const listener of this.listeners) listener(event);
  }

  protected emitProgress(force: boolean): void {
    if (this.progressListeners.size === 0) return;
    const now = this.now();
    if (!force && now - this.lastProgress < PROGRESS_INTERVAL_MS) {
      // Held back, not lost: it goes once the interval is over (a rate-limited job may settle nothing more for seconds).
      if (!this.progressTimer) {
        this.progressTimer = setTimeout(() => {
          this.progressTimer = null;
          if (this.statusValue !== 'null') this.emitProgress(true);
        }, PROGRESS_INTERVAL_MS - (now - this.lastProgress));
        (this.progressTimer as { unref?: () => void }).unref?.();
      }
      return;
    }
    if (this.progressTimer) {
      clearTimeout(this.progressTimer);
      this.progressTimer = null;
    }
    this.lastProgress = now;
    const info = this.query();
    for (const listener of this.progressListeners) listener(info);
  }

  // ---- sleeping ------------------------------------------------------------------------------

  /** Wakes the loop; a kick while it is not asleep is kept for its next sleep. */
  protected kick(): void {
    const waiter = this.waiter;
    this.waiter = null;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (waiter) waiter();
    else this.kickPending = true;
  }

  /**
   * Waits out a backoff: a kick that came before (the error being backed off
   * kicks the loop itself) does not cut it short; one during it does, and
   * the loop looks at its verbs again.
   */
  protected backoffSleep(ms: number): Promise<void> {
    this.kickPending = false;
    return this.sleep(ms);
  }

  /** Sleeps until kicked (an op finished, a verb, a source write) or `ms` passed. */
  protected sleep(ms?: number): Promise<void> {
    if (this.kickPending) {
      this.kickPending = false;
      // A loop that always finds a kick waiting would never give the event loop a turn (no I/O
      // callback, no command read: a monitor that hangs). Every so often it yields one.
      if (++this.quickWakes < QUICK_WAKES) return Promise.resolve();
      this.quickWakes = 0;
      return yieldToEventLoop();
    }
    this.quickWakes = 0;
    return new Promise((resolve) => {
      this.waiter = resolve;
      if (ms !== undefined) this.timer = setTimeout(() => this.kick(), ms);
    });
  }
}
