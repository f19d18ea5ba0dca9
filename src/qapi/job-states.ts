/**
 * The job lifecycle as data, as QEMU's job.c has it (JobSTT, JobVerbTable).
 * Every status change and every verb is checked against these tables by one
 * function each; nothing else decides what is allowed.
 */

export const JOB_STATUSES = [
  'undefined',
  'created',
  'running',
  'paused',
  'ready',
  'standby',
  'waiting',
  'pending',
  'aborting',
  'concluded',
  'null',
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** From each status, the statuses a job may move to. */
export const TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

export const JOB_VERBS = ['cancel', 'pause', 'resume', 'set-speed', 'change', 'complete', 'finalize', 'dismiss'] as const;
export type JobVerb = (typeof JOB_VERBS)[number];

/** For each verb, the statuses in which it is allowed. */
export const VERB_ALLOWED_IN: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending'],
  pause: ['created', 'running', 'paused', 'ready', 'standby'],
  resume: ['created', 'running', 'paused', 'ready', 'standby'],
  'set-speed': ['created', 'running', 'paused', 'ready', 'standby'],
  change: ['created', 'running', 'paused', 'ready', 'standby'],
  complete: ['ready', 'standby'],
  finalize: ['pending'],
  dismiss: ['concluded'],
};

/** A refused verb or an impossible transition. `qmpClass` follows QMP's error classes. */
export class JobError extends Error {
  override name = 'JobError';
  constructor(
    message: string,
    readonly qmpClass: 'GenericError' | 'DeviceNotActive' = 'GenericError',
  ) {
    super(message);
  }
}

export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Throws unless `from -> to` is in the table (a bug if it ever fires). */
export function checkTransition(jobId: string, from: JobStatus, to: JobStatus): void {
  if (!canTransition(from, to)) {
    throw new JobError(`Job '${jobId}': invalid status change from '${from}' to '${to}'`);
  }
}

export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return VERB_ALLOWED_IN[verb].includes(status);
}

/** Throws QEMU's error when `verb` is not allowed in `status`; changes nothing. */
export function checkVerb(jobId: string, verb: JobVerb, status: JobStatus): void {
  if (!verbAllowed(verb, status)) {
    throw new JobError(`Job '${jobId}' in state '${status}' cannot accept command verb '${verb}'`);
  }
}
