/**
 * The mirror's chunks, each one bit of the kernel's bitmaps (granularity
 * bytes of the image): dirty (to copy), in flight, backing off (a failed
 * range waiting for its retry), written (the job put data there: no longer
 * known to read as zero) and zero (last copied as zeroes, for the picture).
 * The ranges that failed and were not copied since are kept here too.
 * Every bitmap is sized here, before any I/O, so linear memory never grows
 * while views over it are in use.
 */
import { compactBitmap } from '../kernel/bitmap-serial.js';
import type { DirtyBitmap, Kernel } from '../kernel/kernel.js';
import type { DurabilityNotice } from '../block/block-device.js';
import type { CellState, FailedRange } from './types.js';

/** Bytes before level 0 in a serialized bitmap (see DirtyBitmap.serialize). */
const SERIAL_HEADER = 16;

export interface ChunkRun {
  start: number;
  length: number;
}

export class ChunkMap {
  readonly nbChunks: number;
  readonly dirty: DirtyBitmap;
  readonly inFlight: DirtyBitmap;
  /** Ranges an ignored error holds back for a while; none when no policy ignores (a bitmap's memory saved). */
  readonly backingOff: DirtyBitmap | null;
  /** Only kept on a target known to read as zero, where it says which chunks no longer are. */
  readonly written: DirtyBitmap | null;
  /**
   * Chunks last copied as zeroes, on a target not known to read as zero. On
   * one that is, a chunk reads as zero exactly while `written` is clear, so
   * no second bitmap is kept (and the holes of a sparse 8 TiB source are
   * never marked one by one).
   */
  private readonly zero: DirtyBitmap | null;
  /** Ranges that failed and were not copied since, by first chunk. */
  private readonly failures = new Map<number, FailedRange>();
  /**
   * Chunks a guest dirtied since the last picture (a bit each, made on the
   * first such write): a picture shows them dirty even when the job copied
   * them again before the picture was taken.
   */
  private touched: Uint8Array | null = null;
  private anyTouched = false;
  private freed = false;
  /**
   * On a target that may lose what it acknowledged (an NBD export): the
   * chunks written since the flush being followed began, and the ones that
   * flush covers. A loss makes both dirty again. Null on other targets.
   */
  private readonly unflushed: DirtyBitmap | null;
  private readonly flushing: DirtyBitmap | null;

  constructor(
    kernel: Kernel,
    readonly size: number,
    readonly granularity: number,
    targetIsZero: boolean,
    /** A policy may answer "ignore": failed ranges back off before they are retried. */
    backsOff = true,
    /** The target may lose writes it acknowledged until they are flushed. */
    targetMayLoseWrites = false,
  ) {
    this.nbChunks = Math.ceil(size / granularity);
    this.dirty = kernel.newBitmap(this.nbChunks);
    this.inFlight = kernel.newBitmap(this.nbChunks);
    this.backingOff = backsOff ? kernel.newBitmap(this.nbChunks) : null;
    this.written = targetIsZero ? kernel.newBitmap(this.nbChunks) : null;
    this.zero = targetIsZero ? null : kernel.newBitmap(this.nbChunks);
    this.unflushed = targetMayLoseWrites ? kernel.newBitmap(this.nbChunks) : null;
    this.flushing = targetMayLoseWrites ? kernel.newBitmap(this.nbChunks) : null;
  }

  /**
   * The job writes these chunks on the target, or has written them. Called
   * when a write is issued and again when it completed: whenever the target
   * tells of a flush or a loss, each write is counted where it may still be
   * at risk.
   */
  noteTargetWrite(first: number, nb: number): void {
    if (!this.freed) this.unflushed?.set(first, nb);
  }

  /**
   * The target's word on its flushes (see DurabilityNotice). On 'lost' the
   * chunks written since the last flush that succeeded are dirty again, and
   * the span from the first of them to the last is returned (null when there
   * were none).
   */
  durability(kind: DurabilityNotice['kind']): { first: number; nb: number; count: number } | null {
    const unflushed = this.unflushed;
    const flushing = this.flushing;
    if (!unflushed || !flushing || this.freed) return null;
    if (kind === 'flush-started') {
      flushing.merge(unflushed);
      unflushed.clear();
    } else if (kind === 'flushed') {
      flushing.clear();
    } else if (kind === 'flush-failed') {
      unflushed.merge(flushing);
      flushing.clear();
    } else {
      unflushed.merge(flushing);
      flushing.clear();
      const count = unflushed.count;
      if (count === 0) return null;
      const first = unflushed.nextDirty(0);
      let end = first;
      for (let run = unflushed.nextDirtyRun(first, this.nbChunks); run; run = end < this.nbChunks ? unflushed.nextDirtyRun(end, this.nbChunks) : null) end = run.start + run.length;
      this.dirty.merge(unflushed);
      unflushed.clear();
      return { first, nb: end - first, count };
    }
    return null;
  }

  /** The bitmaps were freed (the job concluded): every count reads as zero from then on. */
  get released(): boolean {
    return this.freed;
  }

  /** The chunks of a byte range, rounded out. */
  span(offset: number, bytes: number): { first: number; nb: number } {
    const first = Math.floor(offset / this.granularity);
    return { first, nb: Math.ceil((offset + bytes) / this.granularity) - first };
  }

  /** A chunk run as a byte range (the last chunk may be short). */
  bytesOf(first: number, nb: number): { offset: number; bytes: number } {
    const offset = first * this.granularity;
    return { offset, bytes: Math.max(0, Math.min(nb * this.granularity, this.size - offset)) };
  }

  /** Dirty chunks as bytes, whole chunks (QEMU's bdrv_get_dirty_count: a dirty partial last chunk counts whole). */
  dirtyBytes(): number {
    return this.freed ? 0 : this.dirty.count * this.granularity;
  }

  get dirtyCount(): number {
    return this.freed ? 0 : this.dirty.count;
  }

  /** The next run of dirty chunks from `from` that is neither in flight nor backing off, at most `maxChunks` long. */
  nextIssuable(from: number, maxChunks: number): ChunkRun | null {
    let pos = from;
    while (pos < this.nbChunks) {
      const d = this.dirty.nextDirty(pos);
      if (d < 0) return null;
      if (this.inFlight.get(d)) {
        pos = this.inFlight.nextClean(d);
        if (pos < 0) return null;
        continue;
      }
      if (this.backingOff?.get(d)) {
        pos = this.backingOff.nextClean(d);
        if (pos < 0) return null;
        continue;
      }
      const run = this.dirty.nextDirtyRun(d, maxChunks)!;
      let end = run.start + run.length;
      const f = this.inFlight.nextDirty(d);
      if (f >= 0 && f < end) end = f;
      const b = this.backingOff?.nextDirty(d) ?? -1;
      if (b >= 0 && b < end) end = b;
      return { start: d, length: end - d };
    }
    return null;
  }

  /** The job wrote data there: those chunks no longer read as zero. */
  markWritten(first: number, nb: number): void {
    this.written?.set(first, nb);
    this.zero?.reset(first, nb);
  }

  /** The target reads zero there already (created zero, and the job wrote nothing there since). */
  knownZero(first: number, nb: number): boolean {
    return this.written !== null && this.written.countRange(first, nb) === 0;
  }

  /** Zeroes were written (or were there): the picture shows them. */
  markZeroed(first: number, nb: number): void {
    this.written?.reset(first, nb);
    this.zero?.set(first, nb);
  }

  /** A range [first, first + nb) failed (once more, if it failed before). */
  noteFailure(first: number, nb: number, side: FailedRange['side'], errno: FailedRange['errno']): void {
    const prior = this.failures.get(first);
    this.failures.set(first, { ...this.bytesOf(first, nb), side, errno, attempts: (prior?.attempts ?? 0) + 1 });
  }

  /** [first, first + nb) was copied: the failed ranges inside it are failed no more. */
  forgetFailures(first: number, nb: number): void {
    for (const [key, f] of this.failures) {
      const span = this.span(f.offset, f.bytes);
      if (span.first >= first && span.first + span.nb <= first + nb) this.failures.delete(key);
    }
  }

  /** A guest write (background mode) dirtied these chunks: the next picture shows them. */
  noteGuestWrite(first: number, nb: number): void {
    if (this.freed) return;
    this.touched ??= new Uint8Array(Math.ceil(this.nbChunks / 8));
    this.anyTouched = true;
    for (let c = first; c < Math.min(first + nb, this.nbChunks); c++) this.touched[c >>> 3]! |= 1 << (c & 7);
  }

  /** Any chunk of [first, first+nb) touched? Whole bytes at a time: a picture of a large disk stays cheap. */
  private touchedIn(first: number, nb: number): boolean {
    const t = this.touched;
    if (!t || !this.anyTouched) return false;
    const end = Math.min(first + nb, this.nbChunks);
    let c = first;
    while (c < end && c & 7) if (t[c >>> 3]! & (1 << (c++ & 7))) return true;
    while (c + 8 <= end) {
      if (t[c >>> 3]) return true;
      c += 8;
    }
    while (c < end) if (t[c >>> 3]! & (1 << (c++ & 7))) return true;
    return false;
  }

  /** Every chunk of [first, first + nb) reads as zero on the target, as far as the job knows. */
  private allZero(first: number, nb: number): boolean {
    if (this.written) return this.written.countRange(first, nb) === 0;
    return this.zero!.countRange(first, nb) === Math.min(nb, this.nbChunks - first);
  }

  /** The failed ranges not copied since (copies). */
  failedRanges(): FailedRange[] {
    return [...this.failures.values()].map((f) => ({ ...f }));
  }

  /**
   * A picture in `cells` cells, each covering an equal share of the
   * chunks: failed beats in flight beats dirty beats zero beats clean.
   */
  picture(cells: number): CellState[] {
    const out: CellState[] = [];
    if (this.freed) return out;
    const perCell = Math.max(1, Math.ceil(this.nbChunks / Math.max(1, cells)));
    // Failed ranges as chunk spans; nothing is allocated in kernel memory while I/O may be in flight.
    const failed = [...this.failures.values()].map((f) => {
      const first = Math.floor(f.offset / this.granularity);
      return [first, first + Math.max(1, Math.ceil(f.bytes / this.granularity))] as const;
    });
    for (let first = 0; first < this.nbChunks; first += perCell) {
      const end = first + perCell;
      if (failed.some(([a, b]) => a < end && first < b)) out.push('failed');
      else if (this.inFlight.countRange(first, perCell) > 0) out.push('inflight');
      else if (this.dirty.countRange(first, perCell) > 0 || this.touchedIn(first, perCell)) out.push('dirty');
      else if (this.allZero(first, perCell)) out.push('zero');
      else out.push('clean');
    }
    if (this.anyTouched) this.touched!.fill(0);
    this.anyTouched = false;
    return out;
  }

  /**
   * The dirty bitmap as a checkpoint stores it, with the chunks in flight
   * and `changing` (source writes under way) counted dirty: none is clean
   * yet. The union is built here, not in kernel memory: no allocation may
   * grow linear memory (and detach the views of I/O under way).
   */
  serialize(changing: Iterable<{ first: number; nb: number }>): Uint8Array {
    const out = this.dirty.serialize();
    const inFlight = this.inFlight.serialize();
    for (let i = SERIAL_HEADER; i < out.length; i++) out[i]! |= inFlight[i]!;
    for (const w of changing) {
      for (let c = w.first; c < Math.min(w.first + w.nb, this.nbChunks); c++) out[SERIAL_HEADER + (c >>> 3)]! |= 1 << (c & 7);
    }
    // In proportion to what is dirty: a clean 8 TiB job's checkpoint is a few bytes.
    return compactBitmap(out);
  }

  free(): void {
    this.freed = true;
    this.dirty.free();
    this.inFlight.free();
    this.backingOff?.free();
    this.written?.free();
    this.zero?.free();
    this.unflushed?.free();
    this.flushing?.free();
  }
}
