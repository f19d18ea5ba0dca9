/**
 * Crash consistency of the vpc, vdi, vhdx and vmdk writers (vmdk monolithicSparse
 * and streamOptimized, whose writes are whole grains, each once; qemu-img
 * check must find nothing): every write and flush the
 * driver sends to its file is recorded; for many cut points the file is
 * rebuilt as a crash there could leave it (writes in the order issued, or
 * any subset of those since the last flush) and qemu-img must open it and
 * read, at every cut that follows a flush, the guest's bytes as they were
 * then, and at every other cut no byte the guest never had there: the file
 * starts with stale bytes past its end (a block written before an earlier
 * kill and never entered), which must never show through. `qemu-img
 * check` of a vdi may find at most the count of allocated
 * blocks off (the one window two sectors leave open, as in QEMU's own
 * writer), never a block map entry out of range or shared; `qemu-img
 * check` of a vhdx finds nothing (the headers are rewritten one at a
 * time, a block gets its BAT entry only once flushed).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/block-device.js';
import { MemoryDevice } from '../../src/block/memory.js';
import type { CreateImageOptions } from '../../src/format/open.js';
import { createImage, openImage } from '../../src/format/open.js';
import { qemuCheck, requireQemu, tempDir } from '../helpers/qemu.js';
import { type Event, RecordingDevice } from '../helpers/recording-device.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, mixedData } from './qcow2-images.js';
import { qemuRaw } from './vpc-vdi-images.js';

/** The file as a crash after `cut` events leaves it, built in `work` (reused: no copy of the whole file a cut). */
function rebuild(work: Uint8Array, base: Uint8Array, events: Event[], cut: number, keep: (index: number) => boolean): Uint8Array {
  let lastFlush = -1;
  for (let i = 0; i < cut; i++) if (events[i]!.kind === 'flush') lastFlush = i;
  work.set(base);
  let length = base.length;
  const grow = (bytes: number) => {
    if (bytes <= length) return;
    work.fill(0, length, bytes);
    length = bytes;
  };
  for (let i = 0; i < cut; i++) {
    const e = events[i]!;
    if (e.kind === 'write' && (i < lastFlush || keep(i))) {
      grow(e.offset + e.data.length);
      work.set(e.data, e.offset);
    }
    if (e.kind === 'resize') grow(e.bytes);
  }
  return work.subarray(0, length);
}

/** The largest file the events make (the size of the work buffer). */
function largestFile(base: Uint8Array, events: Event[]): number {
  let most = base.length;
  for (const e of events) most = Math.max(most, e.kind === 'write' ? e.offset + e.data.length : e.kind === 'resize' ? e.bytes : 0);
  return most;
}

/** A crashed file as a read-only device, without a copy. */
class ViewDevice implements BlockDevice {
  readonly readOnly = true;
  constructor(private readonly bytes: Uint8Array) {}
  get size() {
    return this.bytes.length;
  }
  async read(offset: number, into: Uint8Array) {
    if (offset + into.length > this.bytes.length) throw new Error(`read past the end at ${offset}`);
    into.set(this.bytes.subarray(offset, offset + into.length));
  }
  async write(): Promise<void> {
    throw new Error('read-only');
  }
  async flush() {}
  async close() {}
}

/** Bytes of stale data past the end of the new image's file. */
const STALE_BYTES = 3 << 20;

/** What the guest may see after a crash at `cut`: its state at the last flush before, and after each round since, up to the one under way. */
function possibleStates(rounds: { end: number; guest: Uint8Array; flushed: boolean }[], cut: number): Uint8Array[] {
  let first = 0;
  for (let i = 0; i < rounds.length; i++) if (rounds[i]!.flushed && rounds[i]!.end <= cut) first = i;
  const out: Uint8Array[] = [];
  for (let i = first; i < rounds.length; i++) {
    out.push(rounds[i]!.guest);
    if (rounds[i]!.end >= cut) break;
  }
  return out;
}

/** The first 512-byte sector of `read` that none of `states` has, or -1. */
function foreignSector(read: Uint8Array, states: Uint8Array[]): number {
  const b = Buffer.from(read.buffer, read.byteOffset, read.length);
  const bufs = states.map((s) => Buffer.from(s.buffer, s.byteOffset, s.length));
  const CHUNK = 64 << 10;
  for (let chunk = 0; chunk < read.length; chunk += CHUNK) {
    const end = Math.min(read.length, chunk + CHUNK);
    // Most chunks are some state's whole: only the others are looked at sector by sector.
    if (bufs.some((s) => s.subarray(chunk, end).equals(b.subarray(chunk, end)))) continue;
    for (let at = chunk; at < end; at += 512) {
      const sector = b.subarray(at, at + 512);
      if (!bufs.some((s) => s.subarray(at, at + 512).equals(sector))) return at;
    }
  }
  return -1;
}

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  requireQemu();
  dir = tempDir('diskmirror-vpc-vdi-crash-');
});
afterAll(() => dir.remove());

const SIZE = 12 << 20;
const GRAIN = 64 << 10;
const CASES: { label: string; create: CreateImageOptions; wholeGrains?: boolean }[] = [
  { label: 'vpc dynamic', create: { format: 'vpc', size: SIZE, forceSize: true } },
  { label: 'vdi dynamic', create: { format: 'vdi', size: SIZE } },
  { label: 'vhdx dynamic', create: { format: 'vhdx', size: SIZE, blockSize: 1 << 20 } },
  { label: 'vhdx fixed', create: { format: 'vhdx', size: SIZE, subformat: 'fixed', blockSize: 1 << 20 } },
  { label: 'vmdk monolithicSparse', create: { format: 'vmdk', size: SIZE } },
  // A stream takes each grain once, whole.
  { label: 'vmdk streamOptimized', create: { format: 'vmdk', size: SIZE, subformat: 'streamOptimized' }, wholeGrains: true },
];

describe('vpc, vdi, vhdx and vmdk crash consistency', () => {
  for (const c of CASES) {
    it(`${c.label}: a crash at any point leaves an image qemu-img opens, with the data flushed before it`, async () => {
      const memory = new MemoryDevice(0);
      await (await createImage(memory, c.create)).close();
      const created = memory.bytes();
      const base = new Uint8Array(created.length + STALE_BYTES).fill(0xee);
      base.set(created);
      const recording = new RecordingDevice(new MemoryDevice(base));
      const image = await openImage(recording, { format: c.create.format });
      const guest = new Uint8Array(SIZE);
      /** The guest's bytes at each flush, by the index of the flush event. */
      const atFlush = new Map<number, Uint8Array>();
      /** The guest after each round, and the event that ended the round; a flushed round starts a new list. */
      const rounds: { end: number; guest: Uint8Array; flushed: boolean }[] = [{ end: 0, guest: guest.slice(), flushed: true }];
      const next = rng(c.label.length * 1000 + 17);
      const grainsWritten = new Set<number>();
      for (let round = 0; round < 16; round++) {
        const writes: { offset: number; data: Uint8Array }[] = [];
        for (let i = 1 + randInt(next, 3); i > 0; i--) {
          let bytes = 512 * (1 + randInt(next, 256));
          let offset = 512 * randInt(next, (SIZE - bytes) / 512);
          if (c.wholeGrains) {
            const grain = randInt(next, SIZE / GRAIN);
            if (grainsWritten.has(grain)) continue;
            grainsWritten.add(grain);
            [offset, bytes] = [grain * GRAIN, GRAIN];
          }
          // Concurrent writes, possibly to the same new block (allocated once), never to the same bytes.
          if (!writes.some((w) => offset < w.offset + w.data.length && w.offset < offset + bytes)) writes.push({ offset, data: mixedData(bytes, randInt(next, 1e9)) });
        }
        await Promise.all(writes.map((w) => image.write(w.offset, w.data)));
        for (const w of writes) guest.set(w.data, w.offset);
        const flushed = round % 3 === 2;
        if (flushed) {
          await image.flush();
          atFlush.set(recording.events.length, guest.slice());
        }
        rounds.push({ end: recording.events.length, guest: guest.slice(), flushed });
      }
      await image.flush();
      atFlush.set(recording.events.length, guest.slice());
      await image.close();
      const events = recording.events;
      expect(events.filter((e) => e.kind === 'write').length).toBeGreaterThan(20);

      // Every cut is read by diskmirror (in memory, fast); qemu-img reads a sample, and the flush points, and must read the same.
      const sampled = new Set<number>([...atFlush.keys()]);
      for (let i = 0; i <= events.length; i += Math.max(1, Math.floor(events.length / 12))) sampled.add(i);
      const path = dir.file(`crash.${c.create.format}`);
      const scratch = dir.file('crash.raw');
      let checked = 0;
      const work = new Uint8Array(largestFile(base, events));
      const ours = new Uint8Array(SIZE);
      for (let cut = 0; cut <= events.length; cut++) {
        for (const model of ['prefix', 'subset'] as const) {
          const pick = rng(cut * 7 + 1);
          const file = rebuild(work, base, events, cut, () => model === 'prefix' || randInt(pick, 2) === 0);
          const what = `${model} crash after event ${cut} of ${events.length}`;
          const crashed = await openImage(new ViewDevice(file), { format: c.create.format, readOnly: true });
          expect(crashed.size).toBe(SIZE);
          await crashed.read(0, ours);
          await crashed.close();
          const expected = atFlush.get(cut);
          if (expected && model === 'prefix') expect(findDiff(ours, expected), `${what}: first byte that differs from the guest's`).toBe(-1);
          expect(foreignSector(ours, possibleStates(rounds, cut)), `${what}: a sector the guest never had there`).toBe(-1);
          checked++;
          if (!sampled.has(cut)) continue;
          writeFileSync(path, file);
          const theirs = await qemuRaw(path, c.create.format, scratch).catch((err: unknown) => err as Error);
          expect(theirs, `${what}: qemu-img cannot read it`).toBeInstanceOf(Uint8Array);
          expect(findDiff(ours, theirs as Uint8Array), `${what}: qemu-img reads otherwise`).toBe(-1);
          if (c.create.format === 'vmdk') {
            const check = await qemuCheck(path, ['-f', 'vmdk']);
            expect(check.code, `${what}: ${check.stderr}`).toBe(0);
          }
          if (c.create.format === 'vdi') {
            const check = await qemuCheck(path, ['-f', 'vdi']);
            const errors = check.stderr.split('\n').filter((l) => l.startsWith('ERROR'));
            expect(errors.filter((l) => !/allocated blocks mismatch/.test(l)), `${what}: ${check.stderr}`).toEqual([]);
          }
          if (c.create.format === 'vhdx') {
            const check = await qemuCheck(path, ['-f', 'vhdx']);
            expect(check.code, `${what}: ${check.stderr}`).toBe(0);
          }
        }
      }
      expect(checked).toBeGreaterThan(40);
    }, 240_000);
  }
});
