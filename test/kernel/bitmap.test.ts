import { describe, expect, it, beforeAll } from 'vitest';
import { Kernel } from '../../src/kernel/kernel.js';
import { ReferenceBitmap } from '../../src/kernel/reference.js';
import { rng, randInt } from '../helpers/random.js';

let kernel: Kernel;
beforeAll(async () => {
  kernel = await Kernel.create();
});

// Sizes chosen to land on and around word (64) and level (4096, 262144) edges.
const SIZES = [1, 63, 64, 65, 127, 4095, 4096, 4097, 70_000, 262_145];

describe('dirty bitmap against the reference', () => {
  for (const size of SIZES) {
    for (const seed of [1, 2, 3]) {
      it(`${size} chunks, seed ${seed}`, () => {
        const next = rng(seed * 7919 + size);
        const wasm = kernel.newBitmap(size);
        const ref = new ReferenceBitmap(size);
        // Ranges biased to be short, long, or to straddle boundaries.
        const pickRange = (): [number, number] => {
          const kind = randInt(next, 4);
          const start = kind === 0 ? Math.max(0, 64 * randInt(next, Math.ceil(size / 64)) - randInt(next, 3)) : randInt(next, size);
          const length = kind === 1 ? randInt(next, size + 10) : kind === 2 ? 1 + randInt(next, 200) : randInt(next, 5000);
          return [start, length];
        };
        for (let op = 0; op < 400; op++) {
          const what = randInt(next, 10);
          if (what < 3) {
            const [s, l] = pickRange();
            wasm.set(s, l);
            ref.set(s, l);
          } else if (what < 6) {
            const [s, l] = pickRange();
            wasm.reset(s, l);
            ref.reset(s, l);
          } else {
            const from = randInt(next, size + 2);
            expect(wasm.nextDirty(from), `nextDirty(${from})`).toBe(ref.nextDirty(from));
            expect(wasm.nextClean(from), `nextClean(${from})`).toBe(ref.nextClean(from));
            const maxLength = 1 + randInt(next, 3000);
            expect(wasm.nextDirtyRun(from, maxLength), `nextDirtyRun(${from}, ${maxLength})`).toEqual(ref.nextDirtyRun(from, maxLength));
            const [s, l] = pickRange();
            expect(wasm.countRange(s, l), `countRange(${s}, ${l})`).toBe(ref.countRange(s, l));
            const probe = randInt(next, size);
            expect(wasm.get(probe)).toBe(ref.get(probe));
          }
          expect(wasm.count).toBe(ref.count);
        }
        // Walking all dirty runs visits exactly the reference's dirty chunks.
        const seen: number[] = [];
        for (let run = wasm.nextDirtyRun(0, 97); run; run = wasm.nextDirtyRun(run.start + run.length, 97)) {
          for (let i = 0; i < run.length; i++) seen.push(run.start + i);
        }
        const expected: number[] = [];
        for (let i = ref.nextDirty(0); i >= 0; i = ref.nextDirty(i + 1)) expected.push(i);
        expect(seen).toEqual(expected);
        wasm.free();
      });
    }
  }

  it('serialize and deserialize round-trip, rebuilding the levels', () => {
    const next = rng(42);
    const a = kernel.newBitmap(300_000);
    for (let i = 0; i < 200; i++) a.set(randInt(next, 300_000), randInt(next, 3000));
    const bytes = a.serialize();
    const b = kernel.newBitmap(300_000);
    b.deserialize(bytes);
    expect(b.count).toBe(a.count);
    for (let from = 0; from < 300_000; from += 997) {
      expect(b.nextDirty(from)).toBe(a.nextDirty(from));
    }
    expect(() => kernel.newBitmap(299_999).deserialize(bytes)).toThrow(/300000 chunks/);
    expect(() => b.deserialize(bytes.subarray(1))).toThrow(/bytes, expected/);
  });

  it('deserialize drops bits past the last chunk', () => {
    const a = kernel.newBitmap(70);
    const bytes = a.serialize();
    bytes.fill(0xff, 16);
    a.deserialize(bytes);
    expect(a.count).toBe(70);
    expect(a.nextClean(0)).toBe(-1);
  });

  it('merge ORs two bitmaps, as the reference does', () => {
    const next = rng(9);
    const size = 100_000;
    const [a, b] = [kernel.newBitmap(size), kernel.newBitmap(size)];
    const [ra, rb] = [new ReferenceBitmap(size), new ReferenceBitmap(size)];
    for (let i = 0; i < 100; i++) {
      const [s, l] = [randInt(next, size), randInt(next, 2000)];
      if (i % 2) { a.set(s, l); ra.set(s, l); } else { b.set(s, l); rb.set(s, l); }
    }
    a.merge(b);
    ra.merge(rb);
    expect(a.count).toBe(ra.count);
    for (let from = 0; from < size; from += 101) expect(a.nextDirty(from)).toBe(ra.nextDirty(from));
    expect(() => a.merge(kernel.newBitmap(5))).toThrow(/sizes differ/);
  });

  it('an empty bitmap (zero chunks) answers without error', () => {
    const a = kernel.newBitmap(0);
    a.set(0, 10);
    expect(a.count).toBe(0);
    expect(a.nextDirty(0)).toBe(-1);
    expect(a.nextDirtyRun(0, 10)).toBeNull();
    expect(a.serialize().byteLength).toBe(24);
  });

  it('refuses invalid sizes and positions with a named error', () => {
    expect(() => kernel.newBitmap(-1)).toThrow(/bitmap size -1/);
    expect(() => kernel.newBitmap(1.5)).toThrow(/bitmap size 1.5/);
    const a = kernel.newBitmap(10);
    expect(() => a.set(-1, 2)).toThrow(/start -1/);
    expect(() => a.nextDirty(Number.NaN)).toThrow(/from NaN/);
  });

  it('comes back clean whether its memory is reused, freshly grown, or both', async () => {
    // A kernel of its own, so the memory's history is known: fill bitmaps
    // completely, free them, then ask for bitmaps that reuse that memory,
    // straddle the old end of memory, and lie wholly past it. Only memory
    // that may hold something is cleared (an 8 TiB job's untouched bitmap
    // pages never become resident), so every level must still read clean.
    const k = await Kernel.create();
    const sizes = [70_000, 1_000_003, 4_000_037, 30_000_001];
    for (let round = 0; round < 3; round++) {
      const held = sizes.map((n) => k.newBitmap(n * (round + 1)));
      for (const b of held) {
        expect(b.count).toBe(0);
        expect(b.nextDirty(0)).toBe(-1);
        expect(b.countRange(0, b.size)).toBe(0);
        const at = b.size - 1 - (round * 977 % 1000);
        b.set(at, 1);
        expect(b.nextDirty(0)).toBe(at);
        expect(b.nextDirtyRun(0, 10)).toEqual({ start: at, length: 1 });
        b.set(0, b.size); // every word of every level non-zero before it is freed
      }
      for (const b of held) b.free();
    }
  });

  it('handles 2^32 + 5 chunks (256 TiB at 64 KiB), at the far end', () => {
    const size = 2 ** 32 + 5;
    const a = kernel.newBitmap(size);
    expect(a.levels).toBe(6); // 2^26+1 words, then 2^20+1, 2^14+1, 257, 5, 1
    a.set(size - 3, 10); // clamped to the end
    a.set(2 ** 32 - 64, 2);
    expect(a.count).toBe(5);
    expect(a.nextDirty(0)).toBe(2 ** 32 - 64);
    expect(a.nextDirty(2 ** 32 - 62)).toBe(size - 3);
    expect(a.nextDirtyRun(size - 4, 100)).toEqual({ start: size - 3, length: 3 });
    expect(a.nextClean(size - 3)).toBe(-1);
    a.reset(0, size);
    expect(a.count).toBe(0);
    expect(a.nextDirty(0)).toBe(-1);
    a.free();
  });
});

describe('zero detection', () => {
  it('agrees with a byte loop for every length and non-zero position up to 300', () => {
    const pool = kernel.newPool(512, 1);
    const buf = pool.take()!;
    for (let len = 0; len <= 300; len++) {
      const view = pool.view(buf, 512);
      view.fill(0);
      expect(kernel.isZero(buf.ptr, len)).toBe(true);
      for (let pos = 0; pos < len; pos += len > 40 ? 7 : 1) {
        view.fill(0);
        view[pos] = 1 << (pos % 8);
        expect(kernel.isZero(buf.ptr, len), `len ${len} pos ${pos}`).toBe(false);
      }
      // A non-zero byte just past the range is not seen.
      view.fill(0);
      view[len] = 0xff;
      expect(kernel.isZero(buf.ptr, len)).toBe(true);
    }
  });

  it('refuses a view that is not over kernel memory', () => {
    expect(() => kernel.isZeroView(new Uint8Array(16))).toThrow(/not over this kernel/);
  });
});

describe('buffer pool', () => {
  it('hands out distinct 64-byte-aligned slots, then none, and takes them back', () => {
    const pool = kernel.newPool(4096, 4);
    const taken = [pool.take(), pool.take(), pool.take(), pool.take()].map((b) => b!);
    expect(pool.take()).toBeNull();
    const ptrs = taken.map((b) => b.ptr).sort((x, y) => x - y);
    for (let i = 1; i < 4; i++) expect(ptrs[i]! - ptrs[i - 1]!).toBeGreaterThanOrEqual(4096);
    for (const p of ptrs) expect(p % 64).toBe(0);
    pool.give(taken[2]!);
    expect(pool.freeSlots).toBe(1);
    expect(pool.take()!.ptr).toBe(taken[2]!.ptr);
    expect(() => pool.give({ ptr: taken[0]!.ptr + 1, bytes: 4096 })).toThrow(/not a taken buffer/);
  });

  it('views survive memory growth when rebuilt', async () => {
    const k = await Kernel.create();
    const pool = k.newPool(1024, 1);
    const buf = pool.take()!;
    pool.view(buf).fill(7);
    const before = k.memory.buffer.byteLength;
    k.newBitmap(64 * 1024 * 1024); // forces growth by 8 MiB
    expect(k.memory.buffer.byteLength).toBeGreaterThan(before);
    expect(pool.view(buf)[1023]).toBe(7);
  });
});

describe('the compact serialized form', () => {
  it('is in proportion to what is dirty, and round-trips through the plain form', async () => {
    const { compactBitmap, dirtyChunks, expandBitmap } = await import('../../src/kernel/bitmap-serial.js');
    // 1 TiB at 64 KiB: 16 million chunks, 2 MiB plain.
    const big = kernel.newBitmap(2 ** 24);
    const plain = big.serialize();
    expect(plain.byteLength).toBeGreaterThan(2 << 20);
    expect(compactBitmap(plain).byteLength).toBe(24);
    big.set(5, 3);
    big.set(2 ** 23, 1000);
    big.set(2 ** 24 - 1, 1);
    const compact = compactBitmap(big.serialize());
    expect(compact.byteLength).toBeLessThan(64);
    const back = kernel.newBitmap(2 ** 24);
    back.deserialize(compact);
    expect(back.count).toBe(1004);
    expect(dirtyChunks(compact)).toBe(1004);
    expect(dirtyChunks(big.serialize())).toBe(1004);
    // Byte for byte (toEqual walks 2 million elements one by one: seconds; a buffer compare: a millisecond).
    expect(Buffer.compare(expandBitmap(compact), big.serialize())).toBe(0);
    big.free();
    back.free();
  });

  it('keeps the plain form when runs would not be smaller, and refuses a damaged compact form', async () => {
    const { compactBitmap } = await import('../../src/kernel/bitmap-serial.js');
    const b = kernel.newBitmap(4096);
    for (let i = 0; i < 4096; i += 2) b.set(i, 1);
    const plain = b.serialize();
    expect(compactBitmap(plain)).toBe(plain);
    const c = kernel.newBitmap(4096);
    c.set(10, 20);
    const compact = compactBitmap(c.serialize());
    const cut = compact.subarray(0, compact.length - 1);
    expect(() => kernel.newBitmap(4096).deserialize(cut)).toThrow(/cut short|empty or past/);
    let past = Uint8Array.from(compact);
    // The run's length made 0x7f7f chunks: past the 4096 there are.
    past[25] = 0xff;
    past = Uint8Array.from([...past.subarray(0, 26), 0x7f]);
    expect(() => kernel.newBitmap(4096).deserialize(past)).toThrow(/serialized bitmap/);
    b.free();
    c.free();
  });
});
