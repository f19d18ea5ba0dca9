/**
 * The page's store of jobs: the state of every job the page knows, as QEMU's
 * job state changes only through its transitions. What changes it: the
 * worker's events and progress, a job's release of its images, a command
 * the worker accepted (a cancel: QEMU refuses a complete from then on), and
 * the page tracking a job it started. Each is a pure reducer from one
 * JobModel to the next; JobStore holds the models, the job shown, and each
 * job's timeline (a bounded history, fed with what the reducers say to
 * mark), and tells its listeners what changed. Nothing here touches the
 * DOM: the job panel draws from it, the stop dialog opens from it, other
 * panels ask it which job runs; under Node it is tested with event
 * sequences recorded from QEMU (test/ui/job-store.test.ts).
 */
import type { AnyQmpEvent, EventData } from '../qapi/events.js';
import { type JobStatus, verbAllowed } from '../qapi/job-states.js';
import type { IoStatus } from '../qapi/policies.js';
import { JOB_VERB, type PageVerb } from '../qapi/verbs.js';
import { formatSize } from '../util/size.js';
import type { CellState, JobOutcome } from '../mirror/types.js';
import type { JobKind, JobProgress, JobRelease } from '../worker/api-types.js';
import { type Ending, describeEnding, metStorageLimit } from './job-ending.js';
import type { StorageFacts } from './storage.js';
import { type MarkKind, TimelineData } from './timeline.js';
import { type Point, measure } from './timeline-scale.js';

/** What the page knows of a job before its first progress. */
export interface JobNames {
  kind: JobKind;
  source: string;
  target: string;
}

export interface JobModel {
  id: string;
  names: JobNames | null;
  status: JobStatus;
  ioStatus: IoStatus;
  paused: boolean;
  ready: boolean;
  last: JobProgress | null;
  /** Bytes done per second over the last seconds (data and zeroes), and of them data copied. */
  rate: number;
  dataRate: number;
  /** The progress counters of the last few seconds the rates come from (t: performance.now()). */
  recent: Point[];
  done: boolean;
  /** The last picture of its bitmap (kept once the job has none any more). */
  picture: CellState[];
  /** The last BLOCK_JOB_ERROR: where and how it failed. */
  lastError: EventData['BLOCK_JOB_ERROR'] | null;
  /** BLOCK_JOB_ERRORs since it was tracked, and how many of them stopped it (each opens the stop dialog). */
  errors: number;
  stops: number;
  /** How it ended: from its last event, then from its release. */
  ending: Ending | null;
  completedError: string | undefined;
  /** What it had copied when it ended. */
  endOffset: number;
  /** When errors the job ignored came (ms, Date.now()), the last few. */
  ignoredAt: number[];
  release: JobRelease | null;
  /** A cancel was accepted: QEMU refuses a complete from then on (a soft cancel after READY finishes without switching over). */
  cancelled: boolean;
  /** The browser's storage as it was first reported after the job ended, and as it is now (what a job that ran out of space says, and when Retry is offered). */
  storage: { atEnd: StorageFacts | null; now: StorageFacts | null };
}

/** A mark for the job's timeline, as a reducer asks for it. */
export interface TimelineMark {
  kind: MarkKind;
  label: string;
}

/** The id an event is about. */
export function eventJob(e: AnyQmpEvent): string {
  return e.event === 'JOB_STATUS_CHANGE' || e.event === 'BLOCK_JOB_PENDING' ? e.data.id : e.data.device;
}

export function newJob(id: string, names: JobNames | null): JobModel {
  return {
    id,
    names,
    status: 'created',
    ioStatus: 'ok',
    paused: false,
    ready: false,
    last: null,
    rate: 0,
    dataRate: 0,
    recent: [],
    done: false,
    picture: [],
    lastError: null,
    errors: 0,
    stops: 0,
    ending: null,
    completedError: undefined,
    endOffset: 0,
    ignoredAt: [],
    release: null,
    cancelled: false,
    storage: { atEnd: null, now: null },
  };
}

/** The page started (or resumed, or retried) a job it knew: its ending, errors and cancel are forgotten. */
export function restarted(job: JobModel, names: JobNames | undefined): JobModel {
  return { ...job, names: names ?? job.names, done: false, recent: [], rate: 0, dataRate: 0, ending: null, release: null, lastError: null, ignoredAt: [], cancelled: false, storage: { atEnd: null, now: job.storage.now } };
}

function ended(job: JobModel, outcome: JobOutcome, offset: number): JobModel {
  const ending = describeEnding({
    kind: job.names?.kind ?? job.last?.kind ?? 'mirror',
    outcome,
    target: job.names?.target ?? job.last?.target ?? '',
    ...(job.completedError !== undefined ? { error: job.completedError } : {}),
    ...(job.lastError ? { lastError: job.lastError } : {}),
    offset,
    ...(job.release ? { release: job.release } : {}),
    storage: job.storage,
  });
  return { ...job, endOffset: offset, ending };
}

/** One event: the job's next state. `now` is Date.now() (when ignored errors came). */
export function reduceEvent(job: JobModel, e: AnyQmpEvent, now: number): JobModel {
  switch (e.event) {
    case 'JOB_STATUS_CHANGE': {
      const status = e.data.status;
      const next = { ...job, status };
      if (status === 'running' || status === 'ready') next.paused = false;
      if (status === 'paused' || status === 'standby') next.paused = true;
      // A resume clears the io-status a stop left (QEMU's block_job_user_resume resets it).
      if ((status === 'running' || status === 'ready') && (job.status === 'paused' || job.status === 'standby')) next.ioStatus = 'ok';
      if (status === 'ready') next.ready = true;
      if (status === 'null' || status === 'concluded') next.done = true;
      return next;
    }
    case 'BLOCK_JOB_ERROR': {
      const next = { ...job, lastError: e.data, errors: job.errors + 1 };
      if (e.data.action === 'ignore') next.ignoredAt = [...job.ignoredAt, now].slice(-20);
      if (e.data.action === 'stop') {
        next.paused = true;
        next.stops = job.stops + 1;
        // The worker says the io-status the stop left (error-policy.ts decides it); QEMU's own event does not: a stop is then 'failed', and the first error's stays.
        next.ioStatus = e.data['io-status'] ?? (job.ioStatus === 'ok' ? 'failed' : job.ioStatus);
      }
      return next;
    }
    case 'BLOCK_JOB_COMPLETED':
      return ended({ ...job, completedError: e.data.error }, e.data.error ? 'failed' : 'completed', e.data.offset);
    case 'BLOCK_JOB_CANCELLED':
      return ended(job, 'cancelled', e.data.offset);
    default:
      return job;
  }
}

/** What an event marks on the job's timeline (`before`: the job before the event). */
export function timelineMarks(before: JobModel, e: AnyQmpEvent): TimelineMark[] {
  switch (e.event) {
    case 'JOB_STATUS_CHANGE': {
      const s = e.data.status;
      if (s === 'paused' || s === 'standby') return [{ kind: 'pause', label: s === 'standby' ? 'paused while ready (standby)' : 'paused' }];
      if ((s === 'running' || s === 'ready') && (before.status === 'paused' || before.status === 'standby')) return [{ kind: 'resume', label: 'resumed' }];
      return [];
    }
    case 'BLOCK_JOB_ERROR':
      return [{ kind: 'error', label: `${e.data.operation} error at ${formatSize(e.data.offset)} (${e.data.action})` }];
    case 'BLOCK_JOB_READY':
      return [{ kind: 'ready', label: 'READY' }];
    case 'BLOCK_JOB_COMPLETED':
      return [{ kind: 'end', label: e.data.error ? 'failed' : 'completed' }];
    case 'BLOCK_JOB_CANCELLED':
      return [{ kind: 'end', label: 'cancelled' }];
    default:
      return [];
  }
}

/** One progress: QEMU's fields as they are now, and the throughput over the last seconds from the bytes done in them; `now` is performance.now(). */
export function reduceProgress(job: JobModel, p: JobProgress, now: number): JobModel {
  const next: JobModel = { ...job, last: p, status: p.info.status, ioStatus: p.info['io-status'], paused: p.info.paused, ready: p.info.ready };
  // Known from the first progress of a job the page did not start.
  if (!job.names) next.names = { kind: p.kind, source: p.source, target: p.target };
  if (p.cells.length > 0) next.picture = p.cells;
  const measured = measure(job.recent, { t: now, done: p.info.offset, zero: p.stats.bytesZero ?? 0, dirty: p.stats.dirtyBytes });
  return { ...next, ...measured };
}

/** The job let go of its images: the ending names the target as it is now. */
export function reduceRelease(job: JobModel, release: JobRelease): JobModel {
  const next = { ...job, release };
  return job.ending ? ended(next, release.outcome, job.endOffset) : next;
}

/**
 * What the browser reports of its storage now: a job that ended out of
 * space keeps the first report after its end, and offers Retry once a
 * later one shows something changed.
 */
export function reduceStorage(job: JobModel, facts: StorageFacts): JobModel {
  const atEnd = job.ending && job.storage.atEnd === null ? facts : job.storage.atEnd;
  const next = { ...job, storage: { atEnd, now: facts } };
  return job.ending?.tone === 'failed' && metStorageLimit(job.lastError) ? ended(next, 'failed', job.endOffset) : next;
}

/** The worker accepted a verb: after a cancel, QEMU refuses a complete. */
export function reduceAccepted(job: JobModel, verb: PageVerb): JobModel {
  return verb === 'cancel' || verb === 'force-cancel' ? { ...job, cancelled: true } : job;
}

/** Which verbs the job takes now (QEMU's verb table, and what the job's state adds). */
export function verbsEnabled(job: JobModel): Record<PageVerb, boolean> {
  const can = (verb: PageVerb) => !job.done && verbAllowed(JOB_VERB[verb], job.status);
  return {
    pause: can('pause') && !job.paused,
    resume: can('resume') && job.paused,
    complete: can('complete') && !job.cancelled,
    // QMP refuses a soft cancel of a paused job; Cancel then cancels as job-cancel does (verbCall).
    cancel: can('cancel'),
    'force-cancel': can('cancel'),
  };
}

/** The job keeps meeting an error it ignores: it cannot converge while that lasts (the errors so far; 0: it is not stuck). */
export function stuckErrors(job: JobModel, now: number): number {
  const recent = job.ignoredAt.filter((at) => now - at < 10_000).length;
  return !job.done && !job.paused && !job.ready && recent >= 3 ? job.ignoredAt.length : 0;
}

export type JobChange =
  | { cause: 'event'; event: AnyQmpEvent }
  | { cause: 'progress'; progress: JobProgress }
  | { cause: 'track' | 'release' | 'accepted' | 'select' | 'storage' };

export type JobListener = (job: JobModel, change: JobChange) => void;

export class JobStore {
  private readonly jobs = new Map<string, JobModel>();
  private readonly timelines = new Map<string, TimelineData>();
  private readonly listeners = new Set<JobListener>();
  private shown: string | null = null;
  private facts: StorageFacts | null = null;
  /** The last progress of jobs not tracked yet (a job runs before the page hears its id): its figures from the start. */
  private readonly early = new Map<string, JobProgress>();

  /** Hears every change of a job (the shown one or another). */
  listen(listener: JobListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get(id: string): JobModel | undefined {
    return this.jobs.get(id);
  }

  all(): JobModel[] {
    return [...this.jobs.values()];
  }

  /** The job shown. */
  get current(): string | null {
    return this.shown;
  }

  /** The job shown, if it has not ended. */
  get running(): string | null {
    const job = this.shown ? this.jobs.get(this.shown) : undefined;
    return job && !job.done ? job.id : null;
  }

  timeline(id: string): TimelineData | undefined {
    return this.timelines.get(id);
  }

  private set(job: JobModel, change: JobChange): JobModel {
    this.jobs.set(job.id, job);
    for (const listener of this.listeners) listener(job, change);
    return job;
  }

  /** A job the page started or resumed: it becomes the one shown. With `names`, it is named before its first progress. */
  track(id: string, names?: JobNames): JobModel {
    const known = this.jobs.get(id);
    if (known) this.timelines.get(id)!.mark('resume', 'started again');
    else this.timelines.set(id, new TimelineData());
    this.shown = id;
    const job = this.set(known ? restarted(known, names) : newJob(id, names ?? null), { cause: 'track' });
    const early = this.early.get(id);
    this.early.delete(id);
    return (!known && early && this.onProgress(early)) || job;
  }

  select(id: string): void {
    const job = this.jobs.get(id);
    if (!job) return;
    this.shown = id;
    this.set(job, { cause: 'select' });
  }

  onEvent(e: AnyQmpEvent, now = Date.now()): JobModel | undefined {
    const job = this.jobs.get(eventJob(e));
    if (!job) return undefined;
    const timeline = this.timelines.get(job.id)!;
    for (const m of timelineMarks(job, e)) timeline.mark(m.kind, m.label);
    return this.set(reduceEvent(job, e, now), { cause: 'event', event: e });
  }

  onProgress(p: JobProgress, now = performance.now()): JobModel | undefined {
    const job = this.jobs.get(p.info.device);
    if (!job) {
      this.early.delete(p.info.device);
      this.early.set(p.info.device, p);
      if (this.early.size > 8) this.early.delete(this.early.keys().next().value!);
      return undefined;
    }
    const next = reduceProgress(job, p, now);
    this.timelines.get(job.id)!.add(p.info.offset, p.stats.bytesZero ?? 0, p.stats.dirtyBytes);
    return this.set(next, { cause: 'progress', progress: p });
  }

  released(release: JobRelease): JobModel | undefined {
    const job = this.jobs.get(release.id);
    return job ? this.set(reduceRelease(job, release), { cause: 'release' }) : undefined;
  }

  /** The browser's storage as it reports it now (after a job's end, an error, a change of the images). */
  storageNow(facts: StorageFacts): void {
    this.facts = facts;
    for (const job of this.jobs.values()) this.set(reduceStorage(job, facts), { cause: 'storage' });
  }

  /** The browser's storage as last reported. */
  get storage(): StorageFacts | null {
    return this.facts;
  }

  accepted(id: string, verb: PageVerb): void {
    const job = this.jobs.get(id);
    if (job && (verb === 'cancel' || verb === 'force-cancel')) this.set(reduceAccepted(job, verb), { cause: 'accepted' });
  }
}
