/**
 * The timeline's scales and words: a job of a few milliseconds shows its
 * real rate, a rate-limited job whose progress comes in bursts shows its
 * limit while it runs, the axes have round ticks from milliseconds to
 * hours and from bytes to gigabytes per second, marks never fall past the
 * end, and the words say what the throughput counts.
 */
import { describe, expect, it } from 'vitest';
import { JobStore } from '../../src/ui/job-store.js';
import { TimelineData, timelineFigures, timelineWords } from '../../src/ui/timeline.js';
import type { JobProgress } from '../../src/worker/api-types.js';
import { type Point, recentRate, sizeAxis, sizeLabel, stretches, timeAxis, timeLabel } from '../../src/ui/timeline-scale.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** A timeline on a clock the test moves. */
function clocked(): { data: TimelineData; at(ms: number): void } {
  let now = 1_000_000;
  const start = now;
  return { data: new TimelineData(() => now), at: (ms) => (now = start + ms) };
}

describe('rates between points', () => {
  it('an 8 MiB copy done in 40 ms: its peak is 8 MiB over 40 ms, not 1 byte/s', () => {
    const { data, at } = clocked();
    at(3);
    data.add(0, 0, 8 * MiB); // created
    at(5);
    data.add(0, 0, 8 * MiB); // running
    at(43);
    data.add(8 * MiB, 2 * MiB, 0); // concluded
    const f = timelineFigures(data);
    expect(f.peak).toBeCloseTo((8 * MiB) / 0.04, -3);
    expect(f.peakData).toBeCloseTo((6 * MiB) / 0.04, -3);
    expect(timelineWords(data)).toContain('peak 200 MiB/s (data alone 150 MiB/s)');
    expect(timelineWords(data)).not.toContain('1 byte/s');
  });

  it('a job limited to 1 MiB/s whose progress comes once a second in 1 MiB bursts: about 1 MiB/s all along, never 0 while it runs', () => {
    const { data, at } = clocked();
    at(0);
    data.add(0, 0, 16 * MiB);
    for (let s = 1; s <= 10; s++) {
      // Two progresses a millisecond apart (an op settles, then a status or the next op): no rate of their own.
      at(s * 1000);
      data.add(s * MiB, 0, (16 - s) * MiB);
      at(s * 1000 + 1);
      data.add(s * MiB, 0, (16 - s) * MiB);
      const now = recentRate(data.points);
      // Right after the first progress of a burst, too.
      expect(recentRate(data.points.slice(0, -1)).rate, `after ${s} s`).toBeLessThan(1.1 * MiB);
      expect(now.rate, `after ${s} s`).toBeGreaterThan(0.9 * MiB);
      expect(now.rate, `after ${s} s`).toBeLessThan(1.1 * MiB);
    }
    const s = stretches(data.points);
    expect(s.every((x) => x.to - x.from >= 250)).toBe(true);
    expect(Math.max(...s.map((x) => x.rate))).toBeLessThan(1.1 * MiB);
    expect(Math.min(...s.map((x) => x.rate))).toBeGreaterThan(0.9 * MiB);
  });

  it('a rate-limited job whose first op goes at once: that burst is spread over the wait that follows it, not a peak of its own', () => {
    const points: Point[] = [
      { t: 0, done: 0, zero: 0, dirty: 0 },
      { t: 130, done: MiB, zero: 0, dirty: 0 },
      { t: 4000, done: 2 * MiB, zero: 0, dirty: 0 },
      { t: 8000, done: 3 * MiB, zero: 0, dirty: 0 },
      { t: 8001, done: 3 * MiB + 65536, zero: 0, dirty: 0 },
    ];
    const s = stretches(points);
    expect(s.map((x) => [x.from, x.to])).toEqual([[0, 4000], [4000, 8001]]);
    expect(Math.max(...s.map((x) => x.rate))).toBeLessThan(520 * KiB);
  });

  it('counters that go back (a retry from the start) never give a negative rate', () => {
    const points: Point[] = [
      { t: 0, done: 4 * MiB, zero: 0, dirty: 0 },
      { t: 1000, done: 0, zero: 0, dirty: 0 },
      { t: 2000, done: 1 * MiB, zero: 0, dirty: 0 },
    ];
    expect(stretches(points).map((s) => s.rate)).toEqual([0, MiB]);
  });

  it('a full history drops every other point and keeps the bytes: the rate over the whole job stays the same', () => {
    const { data, at } = clocked();
    for (let i = 0; i <= 2000; i++) {
      at(i * 100);
      data.add(i * 100 * KiB, 0, 0);
    }
    expect(data.points.length).toBeLessThan(600);
    const first = data.points[0]!;
    const last = data.points.at(-1)!;
    expect(last.done).toBe(2000 * 100 * KiB);
    expect((last.done - first.done) / ((last.t - first.t) / 1000)).toBeCloseTo(1000 * KiB, -1);
  });
});

describe('marks fall inside the timeline', () => {
  it('READY after the last progress: the lines are drawn to it and the span ends at it', () => {
    const { data, at } = clocked();
    at(10);
    data.add(0, 0, 8 * MiB);
    at(900);
    data.add(8 * MiB, 0, 0);
    at(2500);
    data.mark('ready', 'READY');
    expect(data.span).toBe(2500);
    expect(data.points.at(-1)!.t).toBe(2500);
    expect(data.marks.every((m) => m.t <= data.span)).toBe(true);
    // Idle since: the rate from 900 ms to READY is 0, and the copy's stretch keeps its rate.
    expect(stretches(data.points).map((s) => Math.round(s.rate / MiB))).toEqual([9, 0]);
  });
});

describe('axes', () => {
  it('time ticks are round in the unit of their step, for a job of milliseconds, seconds, minutes or hours, and never pass the end', () => {
    expect(timeAxis(40, 4).ticks.map((t) => t.label)).toEqual(['0', '10 ms', '20 ms', '30 ms', '40 ms']);
    expect(timeAxis(16_300, 6).ticks.map((t) => t.label)).toEqual(['0', '5 s', '10 s', '15 s']);
    expect(timeAxis(75_000, 6).ticks.map((t) => t.label)).toEqual(['0', '15 s', '30 s', '45 s', '60 s', '75 s']);
    expect(timeAxis(50 * 60_000, 6).ticks.map((t) => t.label)).toEqual(['0', '10 min', '20 min', '30 min', '40 min', '50 min']);
    expect(timeAxis(3 * 3_600_000 + 5 * 60_000, 4).ticks.map((t) => t.label)).toEqual(['0', '1 h', '2 h', '3 h']);
    for (const span of [1, 7, 999, 61_000, 7_200_001]) {
      const axis = timeAxis(span, 5);
      expect(axis.max).toBe(span);
      expect(axis.ticks.at(-1)!.value).toBeLessThanOrEqual(span);
      expect(axis.ticks.length).toBeLessThanOrEqual(6);
    }
  });

  it('size ticks are round binary sizes at or above the peak, labelled in the step’s unit', () => {
    expect(sizeAxis(671 * KiB, 3, '/s').ticks.map((t) => t.label)).toEqual(['0', '500 KiB/s', '1000 KiB/s']);
    expect(sizeAxis(1.03 * GiB, 3, '/s').ticks.map((t) => t.label)).toEqual(['0', '500 MiB/s', '1000 MiB/s', '1500 MiB/s']);
    expect(sizeAxis(7 * MiB, 3).ticks.map((t) => t.label)).toEqual(['0', '5 MiB', '10 MiB']);
    expect(sizeAxis(3, 3).ticks.map((t) => t.label)).toEqual(['0', '1 byte', '2 bytes', '3 bytes']);
    expect(sizeAxis(0, 3).max).toBe(1);
    for (const peak of [1, 1000, 123_456, 5 * GiB, 3 * 1024 * GiB]) {
      const axis = sizeAxis(peak, 3);
      expect(axis.max).toBeGreaterThanOrEqual(peak);
      expect(axis.ticks.length).toBeLessThanOrEqual(5);
    }
  });

  it('labels', () => {
    expect(timeLabel(0, 100)).toBe('0');
    expect(timeLabel(1500, 500)).toBe('1.5 s');
    expect(timeLabel(50, 10)).toBe('50 ms');
    expect(timeLabel(90_000, 30_000)).toBe('90 s');
    expect(sizeLabel(1536 * KiB, 512 * KiB)).toBe('1536 KiB');
    expect(sizeLabel(2 * GiB, GiB)).toBe('2 GiB');
  });
});

describe('words', () => {
  it('say what the throughput counts: data and zeroes not copied', () => {
    const { data, at } = clocked();
    at(0);
    data.add(0, 0, GiB);
    at(1000);
    data.add(1.03 * GiB, 0.28 * GiB, 0);
    expect(timelineWords(data)).toMatch(/^Timeline over 1\.0 s: throughput 1\.03 GiB\/s now \(768 MiB\/s data, 287 MiB\/s zeroes not copied\), peak 1\.03 GiB\/s \(data alone 768 MiB\/s\); 0 bytes dirty \(peak 1\.00 GiB\)\.$/);
  });

  it('once the job ended: the average over the job, not a rate "now"', () => {
    const { data, at } = clocked();
    at(0);
    data.add(0, 0, 8 * MiB);
    at(2000);
    data.add(4 * MiB, 0, 4 * MiB);
    at(4000);
    data.add(8 * MiB, 0, 0);
    data.mark('end', 'completed');
    expect(timelineWords(data)).toBe('Timeline over 4.0 s: throughput 2.00 MiB/s on average, peak 2.00 MiB/s; 0 bytes dirty (peak 8.00 MiB). Marks: +4.0 s completed.');
  });

  it('no progress yet', () => {
    expect(timelineWords(clocked().data)).toBe('Timeline: no progress yet.');
  });
});

describe('a job that ran before the page heard its id', () => {
  it('its last progress before track() is kept: the panel and the timeline have its figures from the start', () => {
    const store = new JobStore();
    const progress = (offset: number) =>
      ({
        kind: 'mirror',
        info: { type: 'mirror', device: 'mirror0', len: 8 * MiB, offset, busy: true, paused: false, speed: 256 * KiB, 'io-status': 'ok', ready: false, status: 'running', 'auto-finalize': true, 'auto-dismiss': true },
        stats: { granularity: 65536, nbChunks: 128, dirtyChunks: 0, dirtyBytes: 8 * MiB - offset, inFlightOps: 0, inFlightBytes: 0, failed: [], bytesDone: offset, bytesRead: offset, bytesWritten: offset, bytesZero: 0, copyMode: 'background' },
        source: 'demo.raw',
        target: 'copy.raw',
        guest: null,
        cells: [],
      }) as JobProgress;
    expect(store.onProgress(progress(0))).toBeUndefined();
    expect(store.onProgress(progress(MiB))).toBeUndefined();
    const job = store.track('mirror0', { kind: 'mirror', source: 'demo.raw', target: 'copy.raw' });
    expect(job.status).toBe('running');
    expect(job.last?.info.offset).toBe(MiB);
    expect(store.timeline('mirror0')!.points.map((p) => p.done)).toEqual([MiB]);
    // Another job's early progress is not this one's.
    store.onProgress({ ...progress(2 * MiB), info: { ...progress(2 * MiB).info, device: 'mirror1' } });
    expect(store.track('mirror2').last).toBeNull();
  });
});
