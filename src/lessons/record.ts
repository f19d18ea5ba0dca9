/**
 * A lesson's run as it was seen, kept so it can be moved through and shared:
 * frames (the job's state, io-status, len, offset and the bitmap's picture
 * at a moment) and the events with their times, bounded: when the frames
 * fill up every other one goes, so the record still spans the whole run at
 * a coarser step. A record travels as a link (#run/CODE): JSON, deflated,
 * base64url; one read back from a link is checked field by field and
 * refused, by name, when it is not one.
 */
import { Inflate, deflateSync, strFromU8, strToU8 } from 'fflate';
import type { AnyQmpEvent } from '../qapi/events.js';
import type { CheckResult } from './checks.js';
import { lessonById } from './catalog.js';

/** One moment of the run. */
export interface RunFrame {
  atMs: number;
  status: string;
  ioStatus: string;
  len: number;
  offset: number;
  /** The bitmap's picture: one letter per cell (c clean, z zero, d dirty, i in flight, f failed). */
  cells: string;
}

export interface RunRecord {
  v: 1;
  lesson: string;
  prediction: string;
  diskBytes: number;
  frames: RunFrame[];
  events: { atMs: number; event: AnyQmpEvent }[];
  /** Events not kept once the record was full. */
  eventsDropped: number;
  result: { tone: 'right' | 'wrong' | 'off'; headline: string; checks: CheckResult[] } | null;
}

const MAX_FRAMES = 400;
const MAX_EVENTS = 1000;
/** A link longer than this is not one of ours (a record of a lesson's run deflates to tens of KiB). */
const MAX_CODE_CHARS = 1 << 20;
const MAX_JSON_BYTES = 8 << 20;

export class RunHistory {
  readonly record: RunRecord;

  constructor(lesson: string, prediction: string, diskBytes: number) {
    this.record = { v: 1, lesson, prediction, diskBytes, frames: [], events: [], eventsDropped: 0, result: null };
  }

  frame(f: RunFrame): void {
    const frames = this.record.frames;
    const last = frames.at(-1);
    // A frame that shows nothing new is not kept (progress repeats while a job is paused).
    if (last && last.status === f.status && last.ioStatus === f.ioStatus && last.offset === f.offset && last.len === f.len && last.cells === f.cells) return;
    frames.push(f);
    if (frames.length > MAX_FRAMES) this.record.frames = frames.filter((_, i) => i % 2 === 0 || i === frames.length - 1);
  }

  event(atMs: number, event: AnyQmpEvent): void {
    if (this.record.events.length >= MAX_EVENTS) this.record.eventsDropped++;
    else this.record.events.push({ atMs, event });
  }
}

/** The frame shown at position `i` of the timeline, and the events up to it. */
export function moment(r: RunRecord, i: number): { frame: RunFrame | null; events: RunRecord['events'] } {
  const frame = r.frames[Math.max(0, Math.min(i, r.frames.length - 1))] ?? null;
  const until = frame ? frame.atMs : Infinity;
  return { frame, events: r.events.filter((e) => e.atMs <= until) };
}

function toBase64Url(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(code: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(code)) throw new RecordError('it is not base64url');
  const s = atob(code.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export class RecordError extends Error {
  constructor(why: string) {
    super(`this link does not hold a lesson's run: ${why}`);
    this.name = 'RecordError';
  }
}

export function encodeRecord(r: RunRecord): string {
  return toBase64Url(deflateSync(strToU8(JSON.stringify(r)), { level: 9 }));
}

/** Inflates at most MAX_JSON_BYTES (a small link must not become gigabytes). */
function inflateBounded(data: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  const inflate = new Inflate((chunk) => {
    total += chunk.length;
    if (total > MAX_JSON_BYTES) throw new RecordError(`it unpacks to more than ${MAX_JSON_BYTES >> 20} MiB`);
    parts.push(chunk);
  });
  try {
    inflate.push(data, true);
  } catch (err) {
    if (err instanceof RecordError) throw err;
    throw new RecordError(`it does not unpack (${(err as Error).message})`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const EVENTS = new Set(['JOB_STATUS_CHANGE', 'BLOCK_JOB_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_PENDING']);
const isNum = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
const isStr = (x: unknown) => typeof x === 'string';

export function decodeRecord(code: string): RunRecord {
  if (code.length > MAX_CODE_CHARS) throw new RecordError('it is too long');
  let parsed: unknown;
  try {
    parsed = JSON.parse(strFromU8(inflateBounded(fromBase64Url(code))));
  } catch (err) {
    if (err instanceof RecordError) throw err;
    throw new RecordError(`it is not JSON (${(err as Error).message})`);
  }
  const r = parsed as Partial<RunRecord> | null;
  if (typeof r !== 'object' || r === null || r.v !== 1) throw new RecordError('it is not a version 1 record');
  if (!isStr(r.lesson) || !lessonById(r.lesson)) throw new RecordError(`it names a lesson this version does not have (${String(r.lesson).slice(0, 40)})`);
  if (!isStr(r.prediction) || !isNum(r.diskBytes) || !isNum(r.eventsDropped)) throw new RecordError('a field is missing or of the wrong type');
  if (!Array.isArray(r.frames) || r.frames.length > MAX_FRAMES + 1) throw new RecordError('its frames are not a list of at most 401');
  for (const f of r.frames as unknown[]) {
    const x = f as Partial<RunFrame> | null;
    if (typeof x !== 'object' || x === null || !isNum(x.atMs) || !isStr(x.status) || !isStr(x.ioStatus) || !isNum(x.len) || !isNum(x.offset) || !isStr(x.cells) || !/^[czdif]*$/.test(x.cells!)) {
      throw new RecordError('a frame is damaged');
    }
  }
  if (!Array.isArray(r.events) || r.events.length > MAX_EVENTS) throw new RecordError('its events are not a list of at most 1000');
  for (const e of r.events as unknown[]) {
    const x = e as { atMs?: unknown; event?: { event?: unknown; data?: unknown; timestamp?: unknown } } | null;
    if (typeof x !== 'object' || x === null || !isNum(x.atMs) || typeof x.event !== 'object' || x.event === null || !EVENTS.has(x.event.event as string) || typeof x.event.data !== 'object' || x.event.data === null) {
      throw new RecordError('an event is damaged');
    }
  }
  if (r.result !== null && (typeof r.result !== 'object' || !isStr(r.result.headline) || !Array.isArray(r.result.checks))) throw new RecordError('its result is damaged');
  return r as RunRecord;
}
