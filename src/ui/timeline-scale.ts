/**
 * The timeline's scales, pure: the rate between the points a job's progress
 * left (counters only grow, so a rate is a difference over a time, and a
 * history made coarser keeps every other point without losing bytes), and
 * axes with round ticks for any job, from a few milliseconds to hours and
 * from bytes to gigabytes per second.
 */

/** What the timeline keeps of one progress: cumulative counters at a time. */
export interface Point {
  /** Milliseconds since the timeline began. */
  t: number;
  /** Bytes done (QEMU's offset): data copied and zeroes. */
  done: number;
  /** Of those, done as zeroes (never written as data). */
  zero: number;
  /** Dirty bytes then. */
  dirty: number;
}

/** A stretch between two points: how fast the job went over it. */
export interface Stretch {
  from: number;
  to: number;
  /** Bytes done per second (data and zeroes). */
  rate: number;
  /** Data copied per second. */
  dataRate: number;
}

/**
 * A stretch shorter than this is folded into the one before it (two
 * progresses a millisecond apart are no rate), or, the first, into the one
 * after it (a rate-limited job's first op goes at once, then it waits).
 */
export const MIN_STRETCH_MS = 250;

function stretch(a: Point, b: Point): Stretch {
  const seconds = Math.max(b.t - a.t, 1) / 1000;
  const done = Math.max(0, b.done - a.done);
  const data = Math.max(0, b.done - b.zero - (a.done - a.zero));
  return { from: a.t, to: b.t, rate: done / seconds, dataRate: Math.min(done, data) / seconds };
}

/** The rate over each stretch between points, none shorter than MIN_STRETCH_MS unless the whole timeline is. */
export function stretches(points: readonly Point[]): Stretch[] {
  const out: Stretch[] = [];
  const starts: number[] = [];
  const short = (s: Stretch | undefined) => s !== undefined && s.to - s.from < MIN_STRETCH_MS;
  for (let i = 1; i < points.length; i++) {
    let from = i - 1;
    // A short stretch so far goes on to this point.
    if (short(out.at(-1))) {
      out.pop();
      from = starts.pop()!;
    }
    out.push(stretch(points[from]!, points[i]!));
    starts.push(from);
  }
  // A short last stretch joins the one before it.
  if (out.length >= 2 && short(out.at(-1))) {
    out.splice(-2, 2);
    starts.pop();
    const from = starts.pop()!;
    out.push(stretch(points[from]!, points.at(-1)!));
  }
  return out;
}

/** Done over the last `windowMs` of points (at least the last stretch): the rate now. */
export function recentRate(points: readonly Point[], windowMs = 3000): { rate: number; dataRate: number } {
  const last = points.at(-1);
  if (!last || points.length < 2) return { rate: 0, dataRate: 0 };
  // Back over the window, and at least MIN_STRETCH_MS (two progresses a millisecond apart are no rate).
  let first = points.length - 2;
  while (first > 0 && (last.t - points[first]!.t < MIN_STRETCH_MS || last.t - points[first - 1]!.t <= windowMs)) first--;
  const a = points[first]!;
  const seconds = Math.max(last.t - a.t, 1) / 1000;
  return { rate: Math.max(0, last.done - a.done) / seconds, dataRate: Math.max(0, last.done - last.zero - (a.done - a.zero)) / seconds };
}

/** A job's rate now is measured over this long (a rate-limited job's progress comes in bursts). */
export const RATE_WINDOW_MS = 3000;
/** The progress seen spans less than this: the job's rate is not known yet (a rate-limited job's first op goes at once, then it waits). */
export const MEASURE_MS = 1000;

/** Too little seen of a job to tell its rate. */
export function measuring(recent: readonly Point[]): boolean {
  const first = recent[0];
  const last = recent.at(-1);
  return !first || !last || last.t - first.t < MEASURE_MS;
}

/**
 * The next point of a job's recent progress: the points kept (the window,
 * and one before it; a job that went back, a retry from the start,
 * measures afresh) and its rates over them, 0 while measuring.
 */
export function measure(before: readonly Point[], point: Point): { recent: Point[]; rate: number; dataRate: number } {
  const kept = before.filter((q) => q.done <= point.done);
  while (kept.length > 1 && point.t - kept[1]!.t >= RATE_WINDOW_MS) kept.shift();
  const recent = [...kept, point];
  return { recent, ...(measuring(recent) ? { rate: 0, dataRate: 0 } : recentRate(recent, RATE_WINDOW_MS)) };
}

/** The first of the round `steps` (ascending) at least `raw` (the last, past them all). */
function niceAtLeast(raw: number, steps: readonly number[]): number {
  for (const s of steps) if (s >= raw) return s;
  return steps.at(-1)!;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
/** Round time steps: milliseconds, seconds, minutes, hours. */
const TIME_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND, MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR];

/** Round byte steps: 1, 2, 5, 10, 20, 50, 100, 200, 500 of bytes, KiB, MiB, GiB, TiB. */
const BYTE_STEPS = [0, 1, 2, 3, 4].flatMap((power) => [1, 2, 5, 10, 20, 50, 100, 200, 500].map((n) => n * 1024 ** power));

/** A tick's time in the unit of the axis's step ("20 ms", "0.5 s", "45 s", "90 s", "20 min", "3 h"). */
export function timeLabel(ms: number, stepMs: number): string {
  if (ms === 0) return '0';
  if (stepMs < 100) return `${ms} ms`;
  if (stepMs < MINUTE) return `${Number((ms / SECOND).toFixed(1))} s`;
  if (stepMs < HOUR) return `${Number((ms / MINUTE).toFixed(1))} min`;
  return `${Number((ms / HOUR).toFixed(1))} h`;
}

/** A tick's size in the unit of the axis's step ("600 KiB", "2 MiB", "1500 MiB"): whole numbers only. */
export function sizeLabel(bytes: number, stepBytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (stepBytes >= 1024 ** (i + 1) && i < units.length - 1) i++;
  const value = bytes / 1024 ** i;
  return `${Number(value.toFixed(2))} ${i === 0 && value === 1 ? 'byte' : units[i]}`;
}

export interface Axis {
  /** The axis runs from 0 to max. */
  max: number;
  ticks: { value: number; label: string }[];
}

/** A time axis from 0 to at least `spanMs`, with at most `maxTicks` round ticks past 0. */
export function timeAxis(spanMs: number, maxTicks = 6): Axis {
  const span = Math.max(spanMs, 1);
  const step = niceAtLeast(span / maxTicks, TIME_STEPS);
  const ticks: Axis['ticks'] = [];
  for (let v = 0; v <= span + step / 1e6; v += step) ticks.push({ value: v, label: timeLabel(v, step) });
  // The axis ends at the data's end; its ticks never pass it.
  return { max: span, ticks };
}

/** A size axis (a rate, or dirty bytes) from 0 to a round value at or above `peak`, with ticks at round steps. */
export function sizeAxis(peak: number, maxTicks = 3, unit = ''): Axis {
  if (!(peak > 0)) return { max: 1, ticks: [{ value: 0, label: '0' }] };
  const step = niceAtLeast(peak / maxTicks, BYTE_STEPS.filter((s) => s > 0));
  const max = Math.ceil(peak / step) * step;
  const ticks: Axis['ticks'] = [];
  for (let v = 0; v <= max; v += step) ticks.push({ value: v, label: v === 0 ? '0' : `${sizeLabel(v, step)}${unit}` });
  return { max, ticks };
}
