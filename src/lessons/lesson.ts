/**
 * A lesson is data: what to set up, what a person may predict, the QMP
 * events the engine is expected to send (in order, others may come
 * between), and what the lesson does when one is seen (lift a fault,
 * Resume, Complete). The page runs it against the worker, and a Node test
 * runs every lesson against the engine, so a lesson cannot drift from what
 * the engine does. Nothing here runs anything: `LessonTrack` only follows
 * events.
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import type { JobStatus } from '../qapi/job-states.js';
import type { MirrorOptions } from '../mirror/options.js';
import type { LessonCheck } from './checks.js';

/** What a lesson does once an expected event is seen. */
export type LessonAction =
  /** Removes every fault rule of the job (fault-remove all). */
  | { do: 'lift-faults' }
  /** Adds a fault rule to the running job (fault-add). */
  | { do: 'add-fault'; rule: string }
  /** Writes to the source through the job, as a guest would (x-source-write). */
  | { do: 'source-write'; offset: number; bytes: number }
  | { do: 'guest-off' }
  | { do: 'resume' }
  | { do: 'complete' }
  /** block-job-cancel without force (after READY: finishes without switching over). */
  | { do: 'cancel' }
  | { do: 'force-cancel' }
  /** Waits before the next action (a person watching). */
  | { do: 'wait'; ms: number }
  /** Waits until a stored checkpoint calls at least this many bytes clean (so an interruption has progress to keep). */
  | { do: 'await-checkpoint'; cleanBytes: number }
  /** The lesson stops acting: the job stays as it is until the learner resumes it (in the stop dialog or the Job panel). */
  | { do: 'await-learner'; says: string }
  /** Before its next step the lesson asks again (a second moment: a fault lifted, a Resume): it goes on once answered. */
  | { do: 'ask'; question: Question }
  /** The job's process dies as a closed tab does (no last word), then the job is resumed from its checkpoint. */
  | { do: 'interrupt-and-resume' };

export interface ExpectedEvent {
  /** What a person reads in the list of expected events. */
  label: string;
  event: AnyQmpEvent['event'];
  /** For JOB_STATUS_CHANGE: the status. */
  status?: JobStatus;
  /** Fields of the event's data that must be equal (`null`: the field is absent). */
  match?: Record<string, string | number | boolean | null>;
  /** What the lesson does once this event is seen. */
  then?: LessonAction[];
}

export interface LessonSetup {
  /** The source is the demo image (8 MiB: patterns, a run of zeroes, text), made afresh. */
  source: 'demo';
  /** The target, made afresh (a stale one from an earlier run is deleted first). */
  target: string;
  targetFormat?: 'raw' | 'qcow2';
  /** The job's options as QEMU names them; a lesson sets the speed limit it needs to be watched. */
  options: MirrorOptions;
  /** Fault rules armed before the start (SIDE:OP:ERRNO:RANGE[:once], as --inject). */
  faults: string[];
  /** A guest writing to the source from the start, in bytes per second. */
  guest?: number;
}

/** An answer a person may pick before a run. */
export interface Choice {
  id: string;
  label: string;
  /** What would make it happen (said to someone who picked it when something else did). */
  means: string;
}

/** A question with its choices and the answer the run will show. */
export interface Question {
  question: string;
  choices: Choice[];
  answer: string;
}

export interface Lesson {
  id: string;
  title: string;
  /** A short text in plain words. */
  text: string;
  /** The QEMU names it teaches. */
  teaches: string[];
  setup: LessonSetup;
  prediction: Question;
  expected: ExpectedEvent[];
  /** What the run must show for the lesson to stand: checked against the run's facts before the prediction is graded. */
  checks: LessonCheck[];
  /** Why it goes this way, citing the rule. */
  why: string;
}

/** Does `e` satisfy `x`? */
export function matches(x: ExpectedEvent, e: AnyQmpEvent): boolean {
  if (x.event !== e.event) return false;
  const data = e.data as unknown as Record<string, unknown>;
  if (x.status !== undefined && data.status !== x.status) return false;
  for (const [key, want] of Object.entries(x.match ?? {})) {
    if (want === null ? key in data && data[key] !== undefined : data[key] !== want) return false;
  }
  return true;
}

/**
 * Follows a run: each event either ticks the next expected one (and yields
 * that one's actions) or passes by. The expected events are ticked in
 * order; an event that does not fit the next one is not an error (errors
 * repeat under ignore, progress events come and go).
 */
export class LessonTrack {
  private next = 0;

  constructor(readonly lesson: Lesson) {}

  /** How many expected events were seen. */
  get ticked(): number {
    return this.next;
  }

  get done(): boolean {
    return this.next === this.lesson.expected.length;
  }

  /** The actions to take now, if `e` ticked an expected event. */
  observe(e: AnyQmpEvent): LessonAction[] {
    const x = this.lesson.expected[this.next];
    if (!x || !matches(x, e)) return [];
    this.next++;
    return x.then ?? [];
  }
}

/** A status change, as an expected event. */
export function status(s: JobStatus, label: string, then?: LessonAction[]): ExpectedEvent {
  return { label, event: 'JOB_STATUS_CHANGE', status: s, ...(then ? { then } : {}) };
}

/** The start every lesson shares. */
export const STARTS: ExpectedEvent[] = [status('created', 'the job is created'), status('running', 'it runs: the bulk copy starts')];

/** A completion after Complete, switching over. */
export const COMPLETES: ExpectedEvent[] = [
  status('waiting', 'waiting'),
  status('pending', 'pending'),
  { label: 'BLOCK_JOB_COMPLETED with no error', event: 'BLOCK_JOB_COMPLETED', match: { error: null } },
  status('concluded', 'concluded'),
  status('null', 'gone (null)'),
];

/** READY, then the lesson presses Complete. */
export const READY_THEN_COMPLETE: ExpectedEvent[] = [
  status('ready', 'ready: source and target are in sync'),
  { label: 'BLOCK_JOB_READY', event: 'BLOCK_JOB_READY', then: [{ do: 'complete' }] },
];

/** A job that fails with EIO: aborting, BLOCK_JOB_COMPLETED with the error, gone. */
export const FAILS_WITH_EIO: ExpectedEvent[] = [
  status('aborting', 'aborting'),
  { label: 'BLOCK_JOB_COMPLETED with error "Input/output error"', event: 'BLOCK_JOB_COMPLETED', match: { error: 'Input/output error' } },
  status('concluded', 'concluded'),
  status('null', 'gone (null)'),
];
