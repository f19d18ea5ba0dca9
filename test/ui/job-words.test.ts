/**
 * The job panel's words for a guest and the copy: a guest faster than a
 * background copy has no ETA and is said to stop the job converging; a
 * write-blocking job whose throughput passes its limit says why.
 */
import { describe, expect, it } from 'vitest';
import { newJob, type JobModel } from '../../src/ui/job-store.js';
import { fallingBehind, jobNote, statRows } from '../../src/ui/job-words.js';
import type { JobProgress } from '../../src/worker/api-types.js';

const MiB = 1 << 20;

function job(copyMode: 'background' | 'write-blocking', guest: number | null, speed: number, rate: number, ready = false): JobModel {
  const last = {
    kind: 'mirror',
    info: { type: 'mirror', device: 'mirror0', len: 8 * MiB, offset: 3 * MiB, busy: true, paused: false, speed, 'io-status': 'ok', ready, status: ready ? 'ready' : 'running', 'auto-finalize': true, 'auto-dismiss': true },
    stats: { granularity: 64 << 10, nbChunks: 128, dirtyChunks: 80, dirtyBytes: 5 * MiB, inFlightOps: 1, inFlightBytes: 64 << 10, failed: [], bytesDone: 3 * MiB, bytesRead: 3 * MiB, bytesWritten: 3 * MiB, copyMode },
    source: 'demo.raw',
    target: 'copy.raw',
    guest: guest === null ? null : { running: true, bytesPerSecond: guest, writes: 10, bytesWritten: 10 * MiB },
    cells: [],
  } as JobProgress;
  return { ...newJob('mirror0', { kind: 'mirror', source: 'demo.raw', target: 'copy.raw' }), status: ready ? 'ready' : 'running', ready, last, rate };
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
