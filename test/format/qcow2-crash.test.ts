/**
 * Crash consistency of the qcow2 writer: every write and flush the driver
 * sends to its file is recorded; then, for many cut points, the file is
 * rebuilt as a crash there could leave it, and qemu-img check must find at
 * most leaked clusters (exit 0 or 3), never corruption (exit 2).
 *
 * Two crash models: writes reach the disk in the order they were issued
 * (a prefix), and the stronger one where, since the last flush, any subset
 * of the writes may have reached it (what a disk cache allows).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { createImage, openImage } from '../../src/format/open.js';
import { qemuCheck, tempDir } from '../helpers/qemu.js';
import { requireProgram } from '../helpers/require-program.js';
import { type Event, RecordingDevice } from '../helpers/recording-device.js';
import { randInt, rng } from '../helpers/random.js';
import { mixedData } from './qcow2-images.js';

/** The file as a crash after `cut` events leaves it; `keep` picks which unflushed writes made it. */
function rebuild(base: Uint8Array, events: Event[], cut: number, keep: (index: number) => boolean): Uint8Array {
  let lastFlush = -1;
  for (let i = 0; i < cut; i++) if (events[i]!.kind === 'flush') lastFlush = i;
  // The file grows by doubling (a 512-byte-cluster image grows a cluster at a time: copying it whole each time made this test minutes long).
  let file = base.slice();
  let length = base.length;
  const put = (offset: number, data: Uint8Array) => {
    const end = offset + data.length;
    if (end > file.length) {
      const grown = new Uint8Array(Math.max(end, file.length * 2));
      grown.set(file.subarray(0, length));
      file = grown;
    }
    file.set(data, offset);
    length = Math.max(length, end);
  };
  for (let i = 0; i < cut; i++) {
    const e = events[i]!;
    if (e.kind === 'write' && (i < lastFlush || keep(i))) put(e.offset, e.data);
    if (e.kind === 'resize' && e.bytes > length) put(e.bytes - 1, new Uint8Array(1));
  }
  return file.subarray(0, length);
}

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  requireProgram('qemu-img', 'the oracle these tests compare with');
  dir = tempDir('diskmirror-crash-');
});
afterAll(() => dir?.remove());

const CASES = [
  { name: '512-byte clusters, 16-bit refcounts (refcount table grows)', create: { clusterSize: 512, size: 4 << 20 } },
  { name: '4 KiB clusters, 1-bit refcounts', create: { clusterSize: 4096, refcountBits: 1, size: 8 << 20 } },
  { name: 'extended L2, 16 KiB clusters', create: { clusterSize: 16384, extendedL2: true, size: 8 << 20 } },
  { name: 'compat 0.10 (v2), 64 KiB clusters', create: { compat: '0.10' as const, size: 16 << 20 } },
];

describe('qcow2 crash consistency', () => {
  for (const c of CASES) {
    it(`${c.name}: a crash at any point leaves at most leaks`, async () => {
      const memory = new MemoryDevice(0);
      const created = await createImage(memory, { format: 'qcow2', ...c.create });
      await created.close();
      const base = memory.bytes();
      const recording = new RecordingDevice(new MemoryDevice(base));
      const image = await openImage(recording, { format: 'qcow2' });
      const size = c.create.size;
      const next = rng(size + (c.create.clusterSize ?? 0));
      // Writes, zeroes and discards, some concurrent (as the mirror issues them).
      for (let round = 0; round < 24; round++) {
        const batch = Array.from({ length: 1 + randInt(next, 4) }, () => {
          const bytes = 1 + randInt(next, 96 << 10);
          const offset = randInt(next, size - bytes);
          const kind = randInt(next, 6);
          if (kind < 4) return image.write(offset, mixedData(bytes, randInt(next, 1e9)));
          if (kind === 4) return image.writeZeroes(offset, bytes, { unmap: true });
          return image.discard!(offset, bytes);
        });
        await Promise.all(batch);
        if (round % 4 === 3) await image.flush();
      }
      await image.close();
      const events = recording.events;
      expect(events.filter((e) => e.kind === 'write').length).toBeGreaterThan(20);

      const cuts = new Set<number>();
      for (let i = 0; i <= events.length; i += Math.max(1, Math.floor(events.length / 60))) cuts.add(i);
      cuts.add(events.length);
      const path = dir.file('crash.qcow2');
      let checked = 0;
      for (const cut of cuts) {
        for (const model of ['prefix', 'subset'] as const) {
          const pick = rng(cut * 7 + 1);
          const file = rebuild(base, events, cut, model === 'prefix' ? () => true : () => pick() < 0.5);
          writeFileSync(path, file);
          const r = await qemuCheck(path);
          expect([0, 3], `${model} crash after event ${cut} of ${events.length}: check exit ${r.code}, ${r.corruptions} corruptions ${r.stderr}`).toContain(r.code);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(60);
    }, 120_000);
  }
});
