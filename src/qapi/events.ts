/**
 * Events in QMP's shape: {event, data, timestamp: {seconds, microseconds}},
 * the same in the UI log, the CLI's JSON lines and the tests.
 */
import type { Errno } from './errors.js';
import type { FaultFacts } from './faults.js';
import type { ErrorAction, IoStatus } from './policies.js';
import type { JobStatus } from './job-states.js';

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

/** The common fields of BLOCK_JOB_COMPLETED / CANCELLED / READY / PENDING... */
export interface BlockJobProgress {
  type: 'mirror';
  device: string;
  len: number;
  offset: number;
  speed: number;
}

export interface EventData {
  JOB_STATUS_CHANGE: { id: string; status: JobStatus };
  BLOCK_JOB_ERROR: {
    device: string;
    operation: 'read' | 'write';
    action: ErrorAction;
    // diskmirror's additions, so a person can see what failed where.
    errno: Errno;
    offset: number;
    bytes: number;
    message: string;
    // The worker's, on what it passes to the page: the job's io-status after
    // the error, and the fault rule behind it (null: no rule was behind it).
    'io-status'?: IoStatus;
    fault?: FaultFacts | null;
  };
  BLOCK_JOB_READY: BlockJobProgress;
  BLOCK_JOB_COMPLETED: BlockJobProgress & { error?: string };
  BLOCK_JOB_CANCELLED: BlockJobProgress;
  BLOCK_JOB_PENDING: { type: 'mirror'; id: string };
}

export type EventName = keyof EventData;

export interface QmpEvent<N extends EventName = EventName> {
  event: N;
  data: EventData[N];
  timestamp: QmpTimestamp;
}

export type AnyQmpEvent = { [N in EventName]: QmpEvent<N> }[EventName];

export function timestamp(nowMs: number = performance.timeOrigin + performance.now()): QmpTimestamp {
  const micros = Math.round(nowMs * 1000);
  return { seconds: Math.floor(micros / 1e6), microseconds: micros % 1e6 };
}

export function makeEvent<N extends EventName>(event: N, data: EventData[N], nowMs?: number): QmpEvent<N> {
  return { event, data, timestamp: timestamp(nowMs) };
}
