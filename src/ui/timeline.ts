/**
 * The timeline of a job: throughput and dirty bytes over time, with marks
 * for errors, pauses, resumes, READY and the end, drawn on a canvas with a
 * text alternative beside it. The history is bounded: at most MAX_POINTS
 * samples whatever the job's length (when full, neighbours are merged and
 * later samples are taken over twice as many updates), so an hour at ten
 * updates a second costs what a minute does.
 */
import { formatSize } from '../util/size.js';
import { byId } from './dom.js';

const MAX_POINTS = 600;
const MAX_MARKS = 200;

export interface Sample {
  /** Milliseconds since the job was first seen. */
  t: number;
  /** Bytes per second. */
  rate: number;
  dirty: number;
}

export type MarkKind = 'error' | 'pause' | 'resume' | 'ready' | 'end';

export interface Mark {
  t: number;
  kind: MarkKind;
  label: string;
  count: number;
}

export class TimelineData {
  readonly samples: Sample[] = [];
  readonly marks: Mark[] = [];
  private readonly start = Date.now();
  /** Updates folded into one sample (doubles each time the history is halved). */
  private stride = 1;
  private pending: { n: number; rate: number; dirty: number } = { n: 0, rate: 0, dirty: 0 };

  now(): number {
    return Date.now() - this.start;
  }

  add(rate: number, dirty: number): void {
    const p = this.pending;
    p.n++;
    p.rate += rate;
    p.dirty = Math.max(p.dirty, dirty);
    if (p.n < this.stride) return;
    this.samples.push({ t: this.now(), rate: p.rate / p.n, dirty: p.dirty });
    this.pending = { n: 0, rate: 0, dirty: 0 };
    if (this.samples.length < MAX_POINTS) return;
    // Full: each pair becomes one, and from now on twice as many updates make a sample.
    const merged: Sample[] = [];
    for (let i = 0; i + 1 < this.samples.length; i += 2) {
      const a = this.samples[i]!;
      const b = this.samples[i + 1]!;
      merged.push({ t: b.t, rate: (a.rate + b.rate) / 2, dirty: Math.max(a.dirty, b.dirty) });
    }
    this.samples.splice(0, this.samples.length, ...merged);
    this.stride *= 2;
  }

  /** A mark; the same one again at once (an error under ignore) is counted, not repeated. */
  mark(kind: MarkKind, label: string): void {
    const last = this.marks.at(-1);
    if (last && last.kind === kind && last.label === label) {
      last.count++;
      return;
    }
    this.marks.push({ t: this.now(), kind, label, count: 1 });
    if (this.marks.length > MAX_MARKS) this.marks.splice(0, this.marks.length - MAX_MARKS);
  }
}

const COLOURS = { rate: '#2f6fd6', dirty: '#d08a00', error: '#d23c3c', pause: '#b56f00', resume: '#2f6fd6', ready: '#2a9d4b', end: '#6b7280' } as const;

function seconds(ms: number): string {
  return `+${(ms / 1000).toFixed(1)} s`;
}

/** The words that stand for the picture. */
export function timelineWords(data: TimelineData): string {
  const last = data.samples.at(-1);
  if (!last) return 'Timeline: no samples yet.';
  const peak = Math.max(...data.samples.map((s) => s.rate));
  const marks = data.marks.slice(-8).map((m) => `${seconds(m.t)} ${m.label}${m.count > 1 ? ` ×${m.count}` : ''}`);
  return `Timeline, ${seconds(last.t).slice(1)}: throughput ${formatSize(last.rate)}/s now (peak ${formatSize(peak)}/s), ${formatSize(last.dirty)} dirty.${marks.length ? ` Marks: ${marks.join(', ')}.` : ''}`;
}

/** Draws a job's timeline on the page's canvas and says it in words. */
/** The timeline canvas's laid-out width, kept by an observer: a draw never forces a layout. */
let laidOut: { canvas: HTMLCanvasElement; width: number } | null = null;

function canvasWidth(canvas: HTMLCanvasElement): number {
  if (laidOut?.canvas !== canvas) {
    const entry = { canvas, width: canvas.clientWidth };
    laidOut = entry;
    new ResizeObserver(() => {
      entry.width = canvas.clientWidth;
    }).observe(canvas);
  }
  return laidOut.width;
}

export function drawTimeline(data: TimelineData): void {
  const canvas = byId<HTMLCanvasElement>('timeline');
  const words = timelineWords(data);
  const wordsEl = byId('timeline-words');
  if (wordsEl.textContent !== words) wordsEl.textContent = words;
  const width = Math.max(100, canvasWidth(canvas) || canvas.width);
  if (canvas.width !== width) canvas.width = width;
  const height = canvas.height;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.clearRect(0, 0, width, height);
  const samples = data.samples;
  if (samples.length === 0) return;
  const tMax = Math.max(1000, samples.at(-1)!.t, data.marks.at(-1)?.t ?? 0);
  const x = (t: number) => (t / tMax) * (width - 2) + 1;
  const top = 14;
  const plot = height - top - 2;
  const line = (key: 'rate' | 'dirty') => {
    const max = Math.max(1, ...samples.map((s) => s[key]));
    ctx.strokeStyle = COLOURS[key];
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => {
      const y = top + plot - (s[key] / max) * plot;
      if (i === 0) ctx.moveTo(x(s.t), y);
      else ctx.lineTo(x(s.t), y);
    });
    ctx.stroke();
    return max;
  };
  for (const m of data.marks) {
    ctx.strokeStyle = COLOURS[m.kind];
    ctx.lineWidth = m.kind === 'error' ? 2 : 1;
    ctx.beginPath();
    ctx.moveTo(x(m.t), top);
    ctx.lineTo(x(m.t), height);
    ctx.stroke();
  }
  const peakRate = line('rate');
  const peakDirty = line('dirty');
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = COLOURS.rate;
  ctx.fillText(`throughput (peak ${formatSize(peakRate)}/s)`, 4, 11);
  ctx.fillStyle = COLOURS.dirty;
  ctx.fillText(`dirty (peak ${formatSize(peakDirty)})`, Math.min(width / 2, 220), 11);
}
