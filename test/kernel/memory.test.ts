/**
 * Kernel memory at its edges (found by the fuzzer, npm run fuzz): a bitmap or
 * buffer placed past 2 GiB came back with a negative address (wasm's i32) and
 * its checkpoint could not be written; memory that could not grow trapped in
 * the allocator ("RuntimeError: unreachable") instead of saying so.
 */
import { describe, expect, it } from 'vitest';
import { Kernel, KernelError } from '../../src/kernel/kernel.js';

const MiB = 1 << 20;

describe('kernel memory past 2 GiB, and memory that cannot grow', () => {
  it('gives unsigned addresses past 2 GiB: a bitmap there serializes and reads back', async () => {
    const k = await Kernel.create();
    // 2.5 GiB of buffers first (reserved, never touched), so the bitmap lands past 2 GiB.
    const pools = Array.from({ length: 5 }, () => k.newPool(512 * MiB, 1));
    const pool = pools.at(-1)!;
    const b = k.newBitmap(100_000);
    b.set(99_000, 7);
    const again = k.newBitmap(100_000);
    again.deserialize(b.serialize());
    expect(again.nextDirtyRun(0, 100)).toEqual({ start: 99_000, length: 7 });
    const buf = pool.take()!;
    expect(buf.ptr).toBeGreaterThan(0);
    pool.give(buf);
  });

  it('says it ran out of memory, by name, and refuses further allocations', async () => {
    const k = await Kernel.create();
    for (let i = 0; i < 7; i++) k.newPool(512 * MiB, 1);
    // 3.5 GiB taken: a bitmap of 512 MiB does not fit in wasm's 4 GiB.
    expect(() => k.newBitmap(2 ** 32)).toThrow(KernelError);
    expect(() => k.newBitmap(2 ** 32)).toThrow(/not enough memory|ran out of memory earlier/);
    expect(() => k.newBitmap(10)).toThrow(/ran out of memory earlier/);
  });
});
