/**
 * The pure parts of the qcow2 driver (entry classification, compressed
 * descriptors, refcount entries of every width, the metadata cache's
 * ordering), and the whole driver on a memory device, as the browser uses it.
 */
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { FormatError } from '../../src/format/image-format.js';
import { createImage, openImage } from '../../src/format/open.js';
import { MetadataCache } from '../../src/format/qcow2/cache.js';
import { checkImage } from '../../src/format/qcow2/check.js';
import { createQcow2 } from '../../src/format/qcow2/create.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { classifyL2, entryOffset, makeCompressed, makeEntry, parseCompressed, subclusterKind, subclusterMask } from '../../src/format/qcow2/l2-entry.js';
import { getRefcountEntry, setRefcountEntry } from '../../src/format/qcow2/refcount.js';
import { randInt, rng } from '../helpers/random.js';
import { mixedData } from './qcow2-images.js';

describe('L2 entries', () => {
  it('classifies in the spec order', () => {
    expect(classifyL2(0, 0, false)).toBe('unallocated');
    expect(classifyL2(0, 1, false)).toBe('zero-plain');
    expect(classifyL2(0x80000000, 0x10001, false)).toBe('zero-alloc');
    expect(classifyL2(0x80000000, 0x10000, false)).toBe('normal');
    expect(classifyL2(0x40000000, 0x10000, false)).toBe('compressed');
    expect(classifyL2(0x40000000, 0x10001, false)).toBe('compressed'); // compressed wins over the zero bit
    // With extended L2, bit 0 is not a zero flag: zeroes live in the bitmap.
    expect(classifyL2(0, 1, true)).toBe('unallocated');
    expect(classifyL2(0x80000000, 0x10001, true)).toBe('normal');
  });

  it('subcluster kinds come from the bitmap; contradictions are invalid', () => {
    expect(subclusterKind('normal', true, 0, 0b10, 1)).toBe('normal');
    expect(subclusterKind('normal', true, 0b10, 0, 1)).toBe('zero-alloc');
    expect(subclusterKind('normal', true, 0, 0b10, 0)).toBe('unallocated-alloc');
    expect(subclusterKind('normal', true, 0b1, 0b1, 5)).toBe('invalid');
    expect(subclusterKind('unallocated', true, 0b100, 0, 2)).toBe('zero-plain');
    expect(subclusterKind('unallocated', true, 0, 0, 2)).toBe('unallocated-plain');
    expect(subclusterKind('unallocated', true, 0, 1, 2)).toBe('invalid');
    expect(subclusterMask(0, 32)).toBe(0xffffffff);
    expect(subclusterMask(1, 32)).toBe(0xfffffffe);
    expect(subclusterMask(3, 5)).toBe(0b11000);
  });

  it('host offsets and compressed descriptors round-trip for every cluster size', () => {
    const next = rng(5);
    for (let bits = 9; bits <= 21; bits++) {
      const cs = 2 ** bits;
      const host = cs * (1 + randInt(next, 2 ** 30));
      const [hi, lo] = makeEntry(host, true);
      expect(entryOffset(hi, lo)).toBe(host);
      for (let i = 0; i < 50; i++) {
        const at = 512 + randInt(next, 2 ** 40);
        const bytes = 1 + randInt(next, cs - 1);
        const [chi, clo] = makeCompressed(at, bytes, bits);
        expect(classifyL2(chi, clo, false)).toBe('compressed');
        const d = parseCompressed(chi, clo, bits);
        expect(d.hostOffset).toBe(at);
        // The range to read covers the data and ends on a sector boundary.
        expect(d.bytes).toBeGreaterThanOrEqual(bytes);
        expect((d.hostOffset + d.bytes) % 512).toBe(0);
        expect(d.bytes - bytes).toBeLessThan(512);
      }
    }
  });
});

describe('refcount entries', () => {
  it('every width stores and reads back, narrow ones packed least significant first', () => {
    for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
      const block = new Uint8Array(4096);
      const entries = (4096 * 8) / bits;
      const max = bits >= 53 ? 2 ** 40 : 2 ** bits - 1;
      const next = rng(bits);
      const values = Array.from({ length: entries }, () => randInt(next, Math.min(max, 2 ** 31) + 1));
      values.forEach((v, i) => setRefcountEntry(block, i, bits, v));
      values.forEach((v, i) => expect(getRefcountEntry(block, i, bits)).toBe(v));
    }
    const b = new Uint8Array(1);
    setRefcountEntry(b, 0, 1, 1);
    setRefcountEntry(b, 3, 1, 1);
    expect(b[0]).toBe(0b1001);
    const w = new Uint8Array(2);
    setRefcountEntry(w, 0, 16, 0x1234);
    expect([...w]).toEqual([0x12, 0x34]);
  });
});

describe('metadata cache', () => {
  it('writes a dependency first, and evicts only clean tables (writing dirty ones back)', async () => {
    const log: string[] = [];
    const io = (name: string) => ({
      read: async (_o: number, into: Uint8Array) => void into.fill(0),
      write: async (offset: number) => void log.push(`${name} write ${offset}`),
      flush: async () => void log.push(`${name} flush`),
    });
    const refcounts = new MetadataCache(io('refcount'), 'refcount', 512, 2);
    const l2 = new MetadataCache(io('l2'), 'L2', 512, 2);
    (await refcounts.get(1024))[0] = 1;
    refcounts.markDirty(1024);
    await l2.dependOn(refcounts);
    (await l2.get(4096))[0] = 1;
    l2.markDirty(4096);
    await l2.flush();
    expect(log).toEqual(['refcount write 1024', 'refcount flush', 'l2 write 4096', 'l2 flush']);
    log.length = 0;
    // Two dirty tables fill the cache; a third get writes them back before evicting.
    for (const off of [512, 1536]) {
      await l2.get(off);
      l2.markDirty(off);
    }
    await l2.get(8192);
    expect(log.filter((l) => l.includes('write'))).toEqual(['l2 write 512', 'l2 write 1536']);
    expect(l2.size).toBeLessThanOrEqual(2);
  });
});

describe('qcow2 on a memory device (no Node APIs)', () => {
  it('creates, writes, reopens, reads and checks clean', async () => {
    const device = new MemoryDevice();
    const size = 8 << 20;
    const image = await createImage(device, { format: 'qcow2', size, clusterSize: 4096, refcountBits: 2 });
    const model = new Uint8Array(size);
    const next = rng(77);
    for (let i = 0; i < 200; i++) {
      const bytes = 1 + randInt(next, 100_000);
      const offset = randInt(next, size - bytes);
      if (randInt(next, 4) === 0) {
        await image.writeZeroes(offset, bytes, { unmap: randInt(next, 2) === 0 });
        model.fill(0, offset, offset + bytes);
      } else {
        const data = mixedData(bytes, i);
        await image.write(offset, data);
        model.set(data, offset);
      }
    }
    await image.close();
    const reopened = (await openImage(new MemoryDevice(device.bytes()), { readOnly: true })) as Qcow2Image;
    const back = new Uint8Array(size);
    await reopened.read(0, back);
    expect(Buffer.compare(Buffer.from(back), Buffer.from(model))).toBe(0);
    const r = await checkImage(reopened);
    expect(r.messages).toEqual([]);
    expect(r.corruptions + r.leaks + r.checkErrors).toBe(0);
  });

  it('unknown incompatible bits are refused by the name in the feature name table; unknown compatible bits are fine', async () => {
    const device = new MemoryDevice();
    await createQcow2(device, { size: 1 << 20 });
    const bytes = device.bytes();
    const view = new DataView(bytes.buffer);
    // Rename the table's entry for incompatible bit 4 to an unknown bit 9 called "teleport".
    const at = bytes.indexOf(0x68, 104); // the feature table extension follows the header
    expect(view.getUint32(at, false)).toBe(0x6803f857);
    for (let e = at + 8; e < at + 8 + view.getUint32(at + 4, false); e += 48) {
      if (bytes[e] === 0 && bytes[e + 1] === 4) {
        bytes[e + 1] = 9;
        bytes.fill(0, e + 2, e + 48);
        bytes.set(new TextEncoder().encode('teleport'), e + 2);
      }
    }
    const withCompat = bytes.slice();
    view.setUint32(76, view.getUint32(76, false) | (1 << 9), false);
    await expect(openImage(new MemoryDevice(bytes), { readOnly: true })).rejects.toThrow(/Unsupported qcow2 feature\(s\): teleport/);
    await expect(openImage(new MemoryDevice(bytes), { readOnly: true })).rejects.toBeInstanceOf(FormatError);
    // Bit 12 with no name in the table is named by its number.
    const unnamed = withCompat.slice();
    new DataView(unnamed.buffer).setUint32(76, 1 << 12, false);
    await expect(openImage(new MemoryDevice(unnamed), { readOnly: true })).rejects.toThrow(/unknown feature bit 12/);
    // An unknown compatible bit (and autoclear bit) is tolerated; a writer clears the autoclear one.
    const cv = new DataView(withCompat.buffer);
    cv.setUint32(84, 1 << 7, false);
    cv.setUint32(92, 1 << 6, false);
    const dev = new MemoryDevice(withCompat);
    const image = await openImage(dev);
    await image.write(0, new Uint8Array(512).fill(1));
    await image.close();
    expect(new DataView(dev.bytes().buffer).getUint32(92, false)).toBe(0);
    expect(new DataView(dev.bytes().buffer).getUint32(84, false)).toBe(1 << 7);
  });

  it('a missing backing file without a resolver is a clear FormatError', async () => {
    const device = new MemoryDevice();
    await createQcow2(device, { size: 1 << 20, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    await expect(openImage(device, { readOnly: true })).rejects.toThrow(/backing file 'base.qcow2'/);
  });
});
