/**
 * The timeline of a job: throughput and dirty bytes over time, with marks
 * for errors, pauses, resumes, READY and the end, drawn on a canvas with
 * axes and a text alternative beside it. What it keeps is the job's
 * counters at each progress (bytes done, of them zeroes, dirty bytes): the
 * throughput over a stretch is the bytes done in it over its time, so a
 * job of a few milliseconds shows its real rate and a rate-limited one
 * shows its limit. The history is bounded: at most MAX_POINTS points
 * whatever the job's length (when full, every other point is dropped,
 * which loses no bytes), so an hour costs what a minute does. The scales
 * are timeline-scale.ts.
 */
import { formatSize } from '../util/size.js';
import { byId } from './dom.js';
import { type Point, type Stretch, recentRate, sizeAxis, stretches, timeAxis } from './timeline-scale.js';

const MAX_POINTS = 600;
const MAX_MARKS = 200;

export type MarkKind = 'error' | 'pause' | 'resume' | 'ready' | 'end';

export interface Mark {
  t: number;
  kind: MarkKind;
  label: string;
  count: number;
}

export class TimelineData {
  readonly points: Point[] = [];
  readonly marks: Mark[] = [];
  private readonly start: number;

  constructor(private readonly clock: () => number = Date.now) {
    this.start = clock();
  }

  now(): number {
    return this.clock() - this.start;
  }

  /** The job's counters now: bytes done (QEMU's offset), of them zeroes, and dirty bytes. */
  add(done: number, zero: number, dirty: number): void {
    // The first point is the job's first progress: a resumed job's offset was not copied here.
    this.points.push({ t: this.now(), done, zero, dirty });
    if (this.points.length < MAX_POINTS) return;
    // Full: every other point goes (the first and the last stay); the counters lose nothing.
    const kept = this.points.filter((_, i) => i % 2 === 0 || i === this.points.length - 1);
    this.points.splice(0, this.points.length, ...kept);
  }

  /** A mark; the same one again at once (an error under ignore) is counted, not repeated. The lines reach it. */
  mark(kind: MarkKind, label: string): void {
    const last = this.marks.at(-1);
    if (last && last.kind === kind && last.label === label) {
      last.count++;
      return;
    }
    const t = this.now();
    const point = this.points.at(-1);
    if (point && t > point.t) this.points.push({ ...point, t });
    this.marks.push({ t, kind, label, count: 1 });
    if (this.marks.length > MAX_MARKS) this.marks.splice(0, this.marks.length - MAX_MARKS);
  }

  /** How long the timeline runs: to its last point or mark. */
  get span(): number {
    return Math.max(this.points.at(-1)?.t ?? 0, this.marks.at(-1)?.t ?? 0);
  }
}

/** The drawing's colours: the page's (style.css), light or dark. */
function colours(): Record<'rate' | 'dirty' | MarkKind | 'muted' | 'line', string> {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
  const rate = v('--chart-rate', '#2f6fd6');
  return { rate, dirty: v('--chart-dirty', '#a86a00'), error: v('--bad', '#c62828'), pause: v('--warn', '#b56f00'), resume: rate, ready: v('--ok', '#2a9d4b'), end: v('--muted', '#5b6470'), muted: v('--muted', '#5b6470'), line: v('--line', '#d8dde3') };
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** The figures the picture shows: throughput now and at its peak (all, and data alone), dirty bytes now and at their peak. */
export function timelineFigures(data: TimelineData): { stretches: Stretch[]; peak: number; peakData: number; peakDirty: number; now: { rate: number; dataRate: number } } {
  const s = stretches(data.points);
  return {
    stretches: s,
    peak: Math.max(0, ...s.map((x) => x.rate)),
    peakData: Math.max(0, ...s.map((x) => x.dataRate)),
    peakDirty: Math.max(0, ...data.points.map((p) => p.dirty)),
    now: recentRate(data.points),
  };
}

/** The words that stand for the picture. */
export function timelineWords(data: TimelineData): string {
  if (data.points.length < 2) return 'Timeline: no progress yet.';
  const f = timelineFigures(data);
  const last = data.points.at(-1)!;
  // Once the job ended there is no "now": the average over the whole timeline instead.
  const ended = data.marks.at(-1)?.kind === 'end';
  const r = ended ? recentRate(data.points, Infinity) : f.now;
  const zeroes = r.rate - r.dataRate;
  // Less than a second seen of a job still running: its rate now is not known yet.
  const young = !ended && last.t - data.points[0]!.t < 1000;
  const now = young
    ? 'not measured yet'
    : `${formatSize(r.rate)}/s ${ended ? 'on average' : 'now'}${zeroes > 0 && r.rate > 0 ? ` (${formatSize(r.dataRate)}/s data, ${formatSize(zeroes)}/s zeroes not copied)` : ''}`;
  const marks = data.marks.slice(-8).map((m) => `+${seconds(m.t)} ${m.label}${m.count > 1 ? ` ×${m.count}` : ''}`);
  return (
    `Timeline over ${seconds(data.span)}: throughput ${now}, peak ${formatSize(f.peak)}/s` +
    `${f.peakData < f.peak ? ` (data alone ${formatSize(f.peakData)}/s)` : ''}; ${formatSize(last.dirty)} dirty (peak ${formatSize(f.peakDirty)}).` +
    `${marks.length ? ` Marks: ${marks.join(', ')}.` : ''}`
  );
}

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

/** The canvas's height on the page (style.css); its pixels are this times the device's pixel ratio. */
const CSS_HEIGHT = 140;
/** Room around the plot for the axes' labels (CSS pixels). */
const PAD = { left: 40, right: 40, top: 8, bottom: 18 };

/** Draws a job's timeline on the page's canvas and says it in words. */
export function drawTimeline(data: TimelineData): void {
  const canvas = byId<HTMLCanvasElement>('timeline');
  const words = timelineWords(data);
  const wordsEl = byId('timeline-words');
  if (wordsEl.textContent !== words) wordsEl.textContent = words;
  const cssWidth = Math.max(160, canvasWidth(canvas) || canvas.width);
  const cssHeight = CSS_HEIGHT;
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(cssWidth * ratio)) canvas.width = Math.round(cssWidth * ratio);
  if (canvas.height !== Math.round(cssHeight * ratio)) canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  const f = timelineFigures(data);
  canvas.dataset.peak = String(Math.round(f.peak));
  if (data.points.length < 2) return;

  const COLOURS = colours();
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  const rate = sizeAxis(f.peak, 3, '/s');
  const dirty = sizeAxis(f.peakDirty, 3);
  // The side margins are as wide as the labels they hold.
  const widest = (axis: typeof rate) => Math.ceil(Math.max(...axis.ticks.map((t) => ctx.measureText(t.label).width)));
  const left = Math.max(PAD.left, widest(rate) + 8);
  const plotW = cssWidth - left - Math.max(PAD.right, widest(dirty) + 8);
  const plotH = cssHeight - PAD.top - PAD.bottom;
  const time = timeAxis(data.span, Math.max(2, Math.floor(plotW / 70)));
  const x = (t: number) => left + (Math.min(Math.max(t, 0), time.max) / time.max) * plotW;
  const y = (v: number, max: number) => PAD.top + plotH - (v / max) * plotH;

  // The rate axis's grid and labels on the left, dirty's on the right, time below.
  ctx.strokeStyle = COLOURS.line;
  ctx.textBaseline = 'middle';
  for (const tick of rate.ticks) {
    const ty = Math.round(y(tick.value, rate.max)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, ty);
    ctx.lineTo(left + plotW, ty);
    ctx.stroke();
    ctx.fillStyle = COLOURS.rate;
    ctx.textAlign = 'right';
    ctx.fillText(tick.label, left - 4, ty);
  }
  ctx.fillStyle = COLOURS.dirty;
  ctx.textAlign = 'left';
  for (const tick of dirty.ticks) ctx.fillText(tick.label, left + plotW + 4, y(tick.value, dirty.max));
  ctx.fillStyle = COLOURS.muted;
  ctx.textBaseline = 'top';
  for (const tick of time.ticks) {
    ctx.textAlign = tick.value === 0 ? 'left' : 'center';
    ctx.fillText(tick.label, x(tick.value), PAD.top + plotH + 4);
  }

  for (const m of data.marks) {
    ctx.strokeStyle = COLOURS[m.kind];
    ctx.lineWidth = m.kind === 'error' ? 2 : 1;
    const mx = Math.round(x(m.t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(mx, PAD.top);
    ctx.lineTo(mx, PAD.top + plotH);
    ctx.stroke();
  }

  // Throughput as steps (each stretch at its average), data alone dashed where zeroes made up some of it.
  const steps = (key: 'rate' | 'dataRate', colour: string, dash: number[]) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.setLineDash(dash);
    ctx.beginPath();
    f.stretches.forEach((s, i) => {
      if (i === 0) ctx.moveTo(x(s.from), y(s[key], rate.max));
      else ctx.lineTo(x(s.from), y(s[key], rate.max));
      ctx.lineTo(x(s.to), y(s[key], rate.max));
    });
    ctx.stroke();
    ctx.setLineDash([]);
  };
  steps('rate', COLOURS.rate, []);
  if (f.stretches.some((s) => s.dataRate < s.rate * 0.99)) steps('dataRate', COLOURS.rate, [4, 3]);

  ctx.strokeStyle = COLOURS.dirty;
  ctx.lineWidth = 2;
  ctx.beginPath();
  data.points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.dirty, dirty.max)) : ctx.lineTo(x(p.t), y(p.dirty, dirty.max))));
  ctx.stroke();
}
