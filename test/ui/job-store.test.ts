/**
 * The page's job store (src/ui/job-store.ts) under Node, driven by what real
 * QEMU said of a mirror job (test/ui/recorded/, made by
 * scripts/record-job-events.mjs): the events go in one by one; at each
 * mark where QEMU was asked (query-block-jobs), the store's status,
 * io-status, paused and ready are QEMU's; at the end, its counts and its
 * ending are the scenario's.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import { verbCall } from '../../src/qapi/verbs.js';
import { JobStore, type JobModel, reduceEvent, verbsEnabled } from '../../src/ui/job-store.js';
import { stopWords } from '../../src/ui/stop-dialog.js';
import type { JobRelease } from '../../src/worker/api-types.js';

interface Recorded {
  scenario: string;
  job: string;
  size: number;
  steps: Array<
    | { event: string; data: Record<string, unknown> }
    | { command: string; arguments: Record<string, unknown> }
    | { query: string; job: { status: string; 'io-status': string; paused: boolean; ready: boolean } }
  >;
}

const DIR = new URL('./recorded/', import.meta.url);
const recorded = (name: string) => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8')) as Recorded;

/** QEMU's events lack diskmirror's additions (errno, offset, bytes, message): as the page gets them, those are filled in. */
function asPageEvent(step: { event: string; data: Record<string, unknown> }): AnyQmpEvent {
  const data = step.event === 'BLOCK_JOB_ERROR' ? { errno: 'EIO', offset: 0, bytes: 0, message: '', ...step.data } : step.data;
  return { event: step.event, data, timestamp: { seconds: 0, microseconds: 0 } } as AnyQmpEvent;
}

/** Plays a recording into a fresh store; checks each query mark against the store on the way; the models seen after each event. */
function play(r: Recorded, store = new JobStore()): { store: JobStore; seen: JobModel[]; marks: string[] } {
  store.track(r.job, { kind: 'mirror', source: 'source.raw', target: 'target.raw' });
  const seen: JobModel[] = [];
  const marks: string[] = [];
  for (const step of r.steps) {
    if ('event' in step) {
      const job = store.onEvent(asPageEvent(step), 1_000);
      expect(job, `${r.scenario}: ${step.event} is about the tracked job`).toBeDefined();
      seen.push(job!);
    } else if ('query' in step) {
      const job = store.get(r.job)!;
      const said = { status: job.status, 'io-status': job.ioStatus, paused: job.paused, ready: job.ready };
      expect(said, `${r.scenario} at "${step.query}"`).toEqual(step.job);
      marks.push(step.query);
    } else if (step.command === 'block-job-cancel') {
      // The worker accepted the cancel (QEMU answered "return").
      store.accepted(r.job, step.arguments.force ? 'force-cancel' : 'cancel');
    }
  }
  return { store, seen, marks };
}

describe('job store, driven by recorded QEMU events', () => {
  it('has every scenario recorded, each with the marks QEMU was asked at', () => {
    const names = readdirSync(DIR).filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, '')).sort();
    expect(names).toEqual(['cancel-after-ready', 'completed', 'force-cancel', 'ignore-errors', 'report-failure', 'stop-then-resume']);
    for (const name of names) expect(play(recorded(name)).seen.length).toBeGreaterThan(4);
  });

  it('completed: READY in sync (io-status ok), then complete: done, ending Done, no errors', () => {
    const { store, marks } = play(recorded('completed'));
    expect(marks).toEqual(['at READY']);
    const job = store.get('job0')!;
    expect([job.status, job.done, job.ready, job.errors, job.stops, job.ending?.tone, job.ending?.word]).toEqual(['null', true, true, 0, 0, 'done', 'Done']);
    expect(store.running).toBeNull();
    expect(store.current).toBe('job0');
  });

  it('soft cancel after READY: COMPLETED (no switch-over), Complete refused from the cancel on', () => {
    const r = recorded('cancel-after-ready');
    const store = new JobStore();
    let beforeCancel: ReturnType<typeof verbsEnabled> | null = null;
    let afterCancel: ReturnType<typeof verbsEnabled> | null = null;
    store.listen((job, change) => {
      if (change.cause === 'event' && change.event.event === 'BLOCK_JOB_READY') beforeCancel = verbsEnabled(job);
      if (change.cause === 'accepted') afterCancel = verbsEnabled(job);
    });
    play(r, store);
    expect(beforeCancel).toEqual({ pause: true, resume: false, complete: true, cancel: true, 'force-cancel': true });
    expect(afterCancel).toEqual({ pause: true, resume: false, complete: false, cancel: true, 'force-cancel': true });
    const job = store.get('job0')!;
    expect([job.done, job.cancelled, job.ending?.tone]).toEqual([true, true, 'done']);
  });

  it('force cancel before READY: CANCELLED, ending Cancelled, every verb off once done', () => {
    const { store, seen } = play(recorded('force-cancel'));
    expect(seen.map((j) => j.status)).toEqual(['created', 'running', 'aborting', 'aborting', 'concluded', 'null']);
    const job = store.get('job0')!;
    expect([job.done, job.ready, job.ending?.tone, job.endOffset]).toEqual([true, false, 'cancelled', 4 << 20]);
    expect(Object.values(verbsEnabled(job)).some(Boolean)).toBe(false);
  });

  it('a stop on a read error: paused with io-status failed as QEMU says, one stop; resume clears it; READY; done', () => {
    const { store, seen, marks } = play(recorded('stop-then-resume'));
    expect(marks).toEqual(['stopped', 'at READY after the resume']);
    const stopped = seen.find((j) => j.stops === 1)!;
    expect([stopped.paused, stopped.ioStatus, stopped.lastError?.action, stopped.lastError?.operation]).toEqual([true, 'failed', 'stop', 'read']);
    expect(verbsEnabled(seen.find((j) => j.status === 'paused')!)).toEqual({ pause: false, resume: true, complete: false, cancel: true, 'force-cancel': true });
    const job = store.get('job0')!;
    expect([job.errors, job.stops, job.ioStatus, job.done, job.ending?.tone]).toEqual([1, 1, 'ok', true, 'done']);
  });

  it('report: one error, the job fails where it stopped copying (BLOCK_JOB_COMPLETED with an error)', () => {
    const { store } = play(recorded('report-failure'));
    const job = store.get('job0')!;
    expect([job.errors, job.stops, job.paused, job.ioStatus, job.completedError, job.endOffset]).toEqual([1, 0, false, 'ok', 'Input/output error', 3 << 20]);
    expect([job.ending?.tone, job.ending?.actions]).toEqual(['failed', ['delete', 'retry']]);
  });

  it('ignore: two errors counted, never paused, io-status stays ok, READY and done', () => {
    const { store, seen } = play(recorded('ignore-errors'));
    expect(seen.some((j) => j.paused)).toBe(false);
    const job = store.get('job0')!;
    expect([job.errors, job.ignoredAt.length, job.stops, job.ioStatus, job.ready, job.ending?.tone]).toEqual([2, 2, 0, 'ok', true, 'done']);
    expect(store.timeline('job0')!.marks.filter((m) => m.kind === 'error').reduce((n, m) => n + m.count, 0)).toBe(2);
  });

  it('takes the io-status the worker tells with a stop, and the first error keeps it', () => {
    const r = recorded('stop-then-resume');
    const stop = r.steps.find((s) => 'event' in s && s.event === 'BLOCK_JOB_ERROR') as { event: string; data: Record<string, unknown> };
    const store = new JobStore();
    store.track('job0');
    const nospace = asPageEvent({ event: 'BLOCK_JOB_ERROR', data: { ...stop.data, errno: 'ENOSPC', 'io-status': 'nospace' } });
    expect(store.onEvent(nospace)!.ioStatus).toBe('nospace');
    // A second stop from QEMU itself (no io-status): the first error's stays, as QEMU keeps it.
    expect(store.onEvent(asPageEvent(stop))!.ioStatus).toBe('nospace');
    expect(store.get('job0')!.stops).toBe(2);
  });

  it('forgets a job it does not track, and a retried job starts again without its ending', () => {
    const r = recorded('report-failure');
    const store = new JobStore();
    expect(store.onEvent(asPageEvent(r.steps[0] as { event: string; data: Record<string, unknown> }))).toBeUndefined();
    play(r, store);
    const release: JobRelease = { id: 'job0', kind: 'mirror', outcome: 'failed', source: 'source.raw', target: 'target.raw', targetImage: null, resumable: true };
    expect(store.released(release)!.ending?.text).toMatch(/nothing was copied, so target\.raw was not kept/);
    const again = store.track('job0');
    expect([again.done, again.ending, again.release, again.cancelled, again.names?.target]).toEqual([false, null, null, false, 'target.raw']);
    expect(store.timeline('job0')!.marks.at(-1)?.label).toBe('started again');
  });

  it('is a pure reducer: the model before an event is left as it was', () => {
    const r = recorded('stop-then-resume');
    const store = new JobStore();
    const before = store.track('job0');
    const frozen = JSON.stringify(before);
    const after = reduceEvent(before, asPageEvent(r.steps[2] as { event: string; data: Record<string, unknown> }), 0);
    expect(JSON.stringify(before)).toBe(frozen);
    expect(after).not.toBe(before);
  });
});

describe('the verb table', () => {
  it('is what QMP is sent for each verb, once for the panel and the lessons alike', () => {
    expect(verbCall('pause', 'j')).toEqual({ command: 'job-pause', args: { id: 'j' } });
    expect(verbCall('resume', 'j')).toEqual({ command: 'job-resume', args: { id: 'j' } });
    expect(verbCall('complete', 'j')).toEqual({ command: 'job-complete', args: { id: 'j' } });
    expect(verbCall('cancel', 'j')).toEqual({ command: 'block-job-cancel', args: { device: 'j', force: false } });
    expect(verbCall('cancel', 'j', { paused: true })).toEqual({ command: 'job-cancel', args: { id: 'j' } });
    expect(verbCall('force-cancel', 'j')).toEqual({ command: 'block-job-cancel', args: { device: 'j', force: true } });
  });
});

describe("the stop dialog's words", () => {
  const error = { device: 'job0', operation: 'write', action: 'stop', errno: 'ENOSPC', offset: 4 << 20, bytes: 65536, message: '' } as const;

  it('say the io-status the worker told, and the fault the event names as still armed', () => {
    const words = stopWords('job0', { ...error, 'io-status': 'nospace', fault: { rule: 'target:write:ENOSPC:4194304-', armed: true } }, 'nospace');
    expect(words.title).toBe('Job job0 stopped: target write error');
    expect(words.text).toBe(
      'Writing 64.0 KiB at 4.00 MiB (bytes 4194304–4259839) of the target failed with ENOSPC. on-target-error paused the job (io-status nospace); the range stays dirty and is retried on Resume.',
    );
    expect(words.armed).toBe('The fault that stopped it (target:write:ENOSPC:4194304-) is still armed: remove it under Faults first, or Resume meets it again.');
  });

  it('say nothing of a fault that fired once (gone), or of none', () => {
    expect(stopWords('job0', { ...error, fault: { rule: 'target:write:ENOSPC:4194304:once', armed: false } }, 'nospace').armed).toBe('');
    expect(stopWords('job0', { ...error, fault: null }, 'failed').armed).toBe('');
    expect(stopWords('job0', error, 'failed').text).toMatch(/\(io-status failed\)/);
  });
});
