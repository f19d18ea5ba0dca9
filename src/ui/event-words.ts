/**
 * One QMP event as a line a person reads: what happened, where, and for an
 * error which policy decided what ("read error at 4.00 MiB (1.00 MiB): EIO;
 * on-source-error=stop, so the job paused (io-status failed)"). Pure: the
 * event log draws it.
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import type { ErrorPolicy } from '../qapi/policies.js';
import { formatSize } from '../util/size.js';

export type EventKind = 'status' | 'error' | 'ready' | 'end';

export interface EventLine {
  job: string;
  kind: EventKind;
  text: string;
}

export interface JobPolicies {
  'on-source-error'?: ErrorPolicy;
  'on-target-error'?: ErrorPolicy;
}

const STATUS_WORDS: Record<string, string> = {
  created: 'created',
  running: 'running',
  paused: 'paused',
  ready: 'ready: source and target are in sync',
  standby: 'standby (paused while ready)',
  waiting: 'waiting to finish',
  pending: 'pending',
  aborting: 'aborting',
  concluded: 'concluded',
  null: 'gone (null)',
  undefined: 'undefined',
};

/** The seconds since `start`, as "+1.201 s". */
export function sinceStart(ms: number): string {
  return `+${(Math.max(0, ms) / 1000).toFixed(3)} s`;
}

/** Milliseconds since the epoch of an event's QMP timestamp. */
export function eventTime(e: AnyQmpEvent): number {
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}

export function eventWords(e: AnyQmpEvent, policies: JobPolicies = {}): EventLine {
  switch (e.event) {
    case 'JOB_STATUS_CHANGE':
      return { job: e.data.id, kind: 'status', text: STATUS_WORDS[e.data.status] ?? e.data.status };
    case 'BLOCK_JOB_PENDING':
      return { job: e.data.id, kind: 'status', text: 'BLOCK_JOB_PENDING' };
    case 'BLOCK_JOB_READY':
      return { job: e.data.device, kind: 'ready', text: `READY: in sync after ${formatSize(e.data.offset)} copied; Complete switches over, Cancel finishes without switching` };
    case 'BLOCK_JOB_COMPLETED':
      return e.data.error
        ? { job: e.data.device, kind: 'error', text: `failed: ${e.data.error} (${formatSize(e.data.offset)} of ${formatSize(e.data.len)} copied)` }
        : { job: e.data.device, kind: 'end', text: `completed: ${formatSize(e.data.len)} copied` };
    case 'BLOCK_JOB_CANCELLED':
      return { job: e.data.device, kind: 'end', text: `cancelled after ${formatSize(e.data.offset)} of ${formatSize(e.data.len)}; the target is left as it is` };
    case 'BLOCK_JOB_ERROR': {
      const d = e.data;
      const side = d.operation === 'read' ? 'source' : 'target';
      const policy = policies[`on-${side}-error`];
      const where = d.bytes > 0 ? `at ${formatSize(d.offset)} (${formatSize(d.bytes)})` : '(a flush)';
      const so =
        d.action === 'report'
          ? 'so the job fails'
          : d.action === 'ignore'
            ? 'so the range stays dirty and is retried'
            : `so the job paused (io-status ${d.errno === 'ENOSPC' ? 'nospace' : 'failed'})`;
      const who = policy ? `on-${side}-error=${policy}` : `the on-${side}-error policy chose ${d.action}`;
      return { job: d.device, kind: 'error', text: `${d.operation} error ${where}: ${d.errno}; ${who}, ${so}` };
    }
  }
}
