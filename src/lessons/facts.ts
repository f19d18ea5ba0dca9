/**
 * What a lesson's run showed, as facts a check can hold it to: the states
 * the job went through and how long it stayed in each pause, the io-status
 * seen there, the errors, READY, how it ended, and what each incarnation of
 * the job copied (a resumed job is a second one with its own len). The
 * recorder only listens: the page feeds it the same events and answers it
 * draws, the Node test feeds it the engine's.
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import type { JobStatus } from '../qapi/job-states.js';

/** One stay in a paused state (paused, or standby when the job was READY). */
export interface PauseFact {
  status: 'paused' | 'standby';
  /** The job's io-status while paused, as the job itself answered ('ok', 'failed', 'nospace'), or null if nobody asked. */
  ioStatus: string | null;
  ms: number;
  /** It ended because the learner (not the lesson) resumed the job. */
  byLearner: boolean;
}

/** One incarnation of the job: a resume from a checkpoint starts another. */
export interface JobRunFact {
  /** What this incarnation had to copy when it ended (QEMU's len: what was dirty at its start plus what became dirty since). */
  len: number;
  /** What it copied. */
  offset: number;
  /** Its first len: what its bitmap held dirty when it started (a resumed job: what the checkpoint held). */
  firstLen: number | null;
}

export interface ErrorFact {
  operation: 'read' | 'write';
  action: string;
  errno: string;
  offset: number;
  bytes: number;
  atMs: number;
}

export interface RunFacts {
  /** The size of the disk the job copies. */
  diskBytes: number;
  statuses: { status: JobStatus; atMs: number }[];
  errors: ErrorFact[];
  pauses: PauseFact[];
  runs: JobRunFact[];
  /** When each BLOCK_JOB_READY came (ms since the start). */
  readyAtMs: number[];
  /** When the lesson lifted its faults or stopped its guest (ms), or null. */
  liftedAtMs: number | null;
  /** The greatest len seen, over every incarnation. */
  maxLen: number;
  ending: { kind: 'completed' | 'failed' | 'cancelled'; error: string | null } | null;
  /** The guest was writing when READY came (write-blocking converges anyway). */
  guestWroteAtReady: boolean;
  /** The target compared equal to the source after the end (null: not compared). */
  targetMatches: boolean | null;
}

/** Follows one lesson's run. Times are the caller's clock (ms). */
export class FactRecorder {
  readonly facts: RunFacts;
  private pauseStart: { status: 'paused' | 'standby'; atMs: number; ioStatus: string | null; byLearner: boolean } | null = null;
  private guestOn: boolean;

  constructor(
    diskBytes: number,
    private readonly now: () => number,
    guest: boolean,
  ) {
    this.guestOn = guest;
    this.facts = { diskBytes, statuses: [], errors: [], pauses: [], runs: [], readyAtMs: [], liftedAtMs: null, maxLen: 0, ending: null, guestWroteAtReady: false, targetMatches: null };
  }

  private get run(): JobRunFact | undefined {
    return this.facts.runs.at(-1);
  }

  event(e: AnyQmpEvent): void {
    const at = this.now();
    const f = this.facts;
    switch (e.event) {
      case 'JOB_STATUS_CHANGE': {
        const s = e.data.status;
        f.statuses.push({ status: s, atMs: at });
        if (s === 'created') f.runs.push({ len: 0, offset: 0, firstLen: null });
        if (this.pauseStart && s !== 'paused' && s !== 'standby') {
          const p = this.pauseStart;
          f.pauses.push({ status: p.status, ioStatus: p.ioStatus, ms: at - p.atMs, byLearner: p.byLearner });
          this.pauseStart = null;
        }
        if (s === 'paused' || s === 'standby') this.pauseStart = { status: s, atMs: at, ioStatus: null, byLearner: false };
        break;
      }
      case 'BLOCK_JOB_ERROR': {
        const d = e.data;
        f.errors.push({ operation: d.operation, action: d.action, errno: d.errno, offset: d.offset, bytes: d.bytes, atMs: at });
        break;
      }
      case 'BLOCK_JOB_READY':
        f.readyAtMs.push(at);
        if (this.guestOn) f.guestWroteAtReady = true;
        this.progress(e.data.len, e.data.offset);
        break;
      case 'BLOCK_JOB_COMPLETED':
        f.ending = { kind: e.data.error ? 'failed' : 'completed', error: e.data.error ?? null };
        this.progress(e.data.len, e.data.offset);
        break;
      case 'BLOCK_JOB_CANCELLED':
        f.ending = { kind: 'cancelled', error: null };
        this.progress(e.data.len, e.data.offset);
        break;
      default:
        break;
    }
  }

  /** The job's len and offset as it answered (query-block-jobs, a progress report, an event). */
  progress(len: number, offset: number): void {
    const run = this.run;
    if (!run) return;
    if (run.firstLen === null) run.firstLen = len;
    run.len = len;
    run.offset = offset;
    this.facts.maxLen = Math.max(this.facts.maxLen, len);
  }

  /** The io-status the job answered while paused. */
  ioStatus(status: string): void {
    if (this.pauseStart) this.pauseStart.ioStatus = status;
  }

  /** The lesson stopped acting and handed over: whoever resumes the paused job now is the learner. */
  learnerHasTheJob(): void {
    if (this.pauseStart) this.pauseStart.byLearner = true;
  }

  lifted(): void {
    this.facts.liftedAtMs ??= this.now();
  }

  guestStopped(): void {
    this.guestOn = false;
  }

  compared(equal: boolean | null): void {
    this.facts.targetMatches = equal;
  }
}
