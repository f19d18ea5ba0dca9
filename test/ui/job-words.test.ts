/**
 * The job panel's words for a guest and the copy: a guest faster than a
 * background copy has no ETA and is said to stop the job converging; a
 * write-blocking job whose throughput passes its limit says why.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import { JobStore, newJob, type JobModel, reduceEvent, reduceProgress } from '../../src/ui/job-store.js';
import { fallingBehind, jobNote, stateDetail, statRows, throughputWords } from '../../src/ui/job-words.js';
import type { JobProgress } from '../../src/worker/api-types.js';

const MiB = 1 << 20;

function job(copyMode: 'background' | 'write-blocking', guest: number | null, speed: number, rate: number, ready = false): JobModel {
  const last = {
    kind: 'mirror',
    info: { type: 'mirror', device: 'mirror0', len: 8 * MiB, offset: 3 * MiB, busy: true, paused: false, speed, 'io-status': 'ok', ready, status: ready ? 'ready' : 'running', 'auto-finalize': true, 'auto-dismiss': true },
    stats: { granularity: 64 << 10, nbChunks: 128, dirtyChunks: 80, dirtyBytes: 5 * MiB, inFlightOps: 1, inFlightBytes: 64 << 10, failed: [], bytesDone: 3 * MiB, bytesRead: 3 * MiB, bytesWritten: 3 * MiB, bytesZero: 0, copyMode },
    source: 'demo.raw',
    target: 'copy.raw',
    guest: guest === null ? null : { running: true, bytesPerSecond: guest, writes: 10, bytesWritten: 10 * MiB },
    cells: [],
  } as JobProgress;
  return { ...newJob('mirror0', { kind: 'mirror', source: 'demo.raw', target: 'copy.raw' }), status: ready ? 'ready' : 'running', ready, last, rate, dataRate: rate, recent: [{ t: 0, done: 0, zero: 0, dirty: 0 }, { t: 2000, done: 3 * MiB, zero: 0, dirty: 0 }] };
}

const eta = (j: JobModel) => statRows(j, Date.now()).find(([label]) => label === 'ETA')![1];

describe('the job panel on a guest and the copy', () => {
  it('a guest faster than a background copy: no ETA, and a note that says why and what to do', () => {
    const j = job('background', 8 * MiB, 2 * MiB, 2 * MiB);
    expect(fallingBehind(j)).toEqual({ guestRate: 8 * MiB, copyRate: 2 * MiB });
    expect(eta(j)).toBe('none while the guest writes faster than the copy');
    expect(jobNote(j, Date.now())).toContain('The guest writes 8.00 MiB/s, faster than this job copies (2.00 MiB/s) in background mode: it cannot converge while the guest writes.');
  });

  it('a slower guest, write-blocking, or READY: an ETA as usual', () => {
    expect(eta(job('background', 1 * MiB, 2 * MiB, 2 * MiB))).toBe('3 s');
    expect(eta(job('write-blocking', 8 * MiB, 2 * MiB, 2 * MiB))).toBe('3 s');
    expect(fallingBehind(job('background', 8 * MiB, 2 * MiB, 2 * MiB, true))).toBeNull();
  });

  it('write-blocking past its limit says the guest’s own copies are not limited', () => {
    expect(jobNote(job('write-blocking', 8 * MiB, 2 * MiB, 9.6 * MiB), Date.now())).toContain('in write-blocking mode each guest write is copied as it is written, at the guest');
    expect(jobNote(job('write-blocking', 8 * MiB, 2 * MiB, 1.9 * MiB), Date.now())).not.toContain('write-blocking mode');
  });
});

const event = (e: string, data: Record<string, unknown>) => ({ event: e, data, timestamp: { seconds: 0, microseconds: 0 } }) as AnyQmpEvent;

describe('the state line once a job ended: its end in words, never QMP’s null', () => {
  // A cancel after READY is QEMU's completion without a switch-over (BLOCK_JOB_COMPLETED): the target equals the source then.
  const ENDINGS: Record<string, string> = {
    'cancel-after-ready.json': '— completed, the target equals the source',
    'completed.json': '— completed, the target equals the source',
    'force-cancel.json': '— cancelled before READY',
    'ignore-errors.json': '— completed, the target equals the source',
    'report-failure.json': '— source read error (EIO)',
    'stop-then-resume.json': '— completed, the target equals the source',
  };

  it('every recorded QEMU ending reads in words', () => {
    const dir = new URL('./recorded/', import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      const r = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as { job: string; steps: { event?: string; data?: Record<string, unknown> }[] };
      const store = new JobStore();
      store.track(r.job, { kind: 'mirror', source: 'source.raw', target: 'target.raw' });
      for (const step of r.steps) {
        if (!step.event) continue;
        const data = step.event === 'BLOCK_JOB_ERROR' ? { errno: 'EIO', offset: 0, bytes: 0, message: '', ...step.data } : step.data!;
        store.onEvent(event(step.event, data), 1_000);
      }
      const line = stateDetail(store.get(r.job)!);
      expect(line, file).not.toMatch(/null|concluded|io-status/);
      expect(line, file).toBe(ENDINGS[file]);
    }
  });

  it('done, failed, cancelled before and after READY, an import', () => {
    const base = newJob('mirror0', { kind: 'mirror', source: 'demo.raw', target: 'copy.qcow2' });
    const progress = { type: 'mirror', device: 'mirror0', len: 8 << 20, offset: 8 << 20, speed: 0 };
    const end = (job: JobModel, e: AnyQmpEvent) => reduceEvent(reduceEvent(job, e, 0), event('JOB_STATUS_CHANGE', { id: 'mirror0', status: 'null' }), 0);
    expect(stateDetail({ ...base, status: 'running' })).toBe('— running (io-status ok)');
    expect(stateDetail(end(base, event('BLOCK_JOB_COMPLETED', progress)))).toBe('— completed, the target equals the source');
    expect(stateDetail(end({ ...base, names: { kind: 'import', source: 'x', target: 'y' } }, event('BLOCK_JOB_COMPLETED', progress)))).toBe('— completed, the image is imported');
    const failed = reduceEvent(base, event('BLOCK_JOB_ERROR', { device: 'mirror0', operation: 'write', action: 'report', errno: 'ENOSPC', offset: 0, bytes: 65536, message: '' }), 0);
    expect(stateDetail(end(failed, event('BLOCK_JOB_COMPLETED', { ...progress, error: 'No space left on device' })))).toBe('— target write error (ENOSPC)');
    expect(stateDetail(end(base, event('BLOCK_JOB_COMPLETED', { ...progress, error: 'Input/output error' })))).toBe('— Input/output error');
    expect(stateDetail(end(base, event('BLOCK_JOB_CANCELLED', progress)))).toBe('— cancelled before READY');
    expect(stateDetail(end({ ...base, ready: true }, event('BLOCK_JOB_CANCELLED', progress)))).toBe('— cancelled in sync, not switched to the target');
  });
});

describe('Throughput says what it counts', () => {
  it('data and zeroes where zeroes made part of it; the rate alone where all was data; idle at READY; – when paused', () => {
    const running = job('background', null, 0, 0);
    expect(throughputWords({ ...running, rate: 2 * MiB, dataRate: 2 * MiB }, false)).toBe('2.00 MiB/s');
    expect(throughputWords({ ...running, rate: 1.03 * 1024 * MiB, dataRate: 768 * MiB }, false)).toBe('1.03 GiB/s (768 MiB/s data, 287 MiB/s zeroes)');
    expect(throughputWords({ ...job('background', null, 0, 0, true), rate: 0 }, false)).toBe('idle: in sync');
    expect(throughputWords({ ...running, paused: true }, false)).toBe('–');
    // Less than a second seen: no rate yet, rather than a first op's burst.
    expect(throughputWords({ ...running, rate: 10 * MiB, recent: running.recent.map((p) => ({ ...p, t: p.t / 10 })) }, false)).toBe('measuring…');
  });

  it('a job limited to 1 MiB/s whose progress comes in bursts reads about 1 MiB/s while it runs, from its first second', () => {
    let model = job('background', null, MiB, 0);
    for (let s = 0; s <= 8; s++) {
      for (const dt of [0, 2]) {
        const p = { ...model.last!, info: { ...model.last!.info, offset: s * MiB }, stats: { ...model.last!.stats, bytesZero: 0 } } as JobProgress;
        model = reduceProgress(model, p, s * 1000 + dt);
      }
      if (s === 0) continue;
      expect(model.rate, `after ${s} s`).toBeGreaterThan(0.9 * MiB);
      expect(model.rate, `after ${s} s`).toBeLessThan(1.1 * MiB);
      expect(statRows(model, Date.now()).find(([k]) => k === 'Throughput')![1]).toMatch(/^1\.0\d MiB\/s$|^1008 KiB\/s$|^10\d\d KiB\/s$/);
    }
  });
});
