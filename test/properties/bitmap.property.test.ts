/**
 * Properties of the kernel's dirty bitmap, found by fast-check (and shrunk to
 * the shortest failing sequence when one fails): any sequence of set, reset,
 * merge and clear leaves it answering every question as the plain reference
 * does, and its checkpoint form (plain or compact runs) brings back the same
 * bitmap; a job state saved as the command's checkpoint file reads back the
 * same.
 */
import fc from 'fast-check';
import { runs } from './runs.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { compactBitmap, dirtyChunks, expandBitmap } from '../../src/kernel/bitmap-serial.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { ReferenceBitmap } from '../../src/kernel/reference.js';

let kernel: Kernel;
beforeAll(async () => {
  kernel = await Kernel.create();
});

type Op =
  | { kind: 'set' | 'reset'; start: number; length: number }
  | { kind: 'merge'; ranges: [number, number][] }
  | { kind: 'clear' }
  | { kind: 'roundtrip' };

/** Sizes around word (64) and level (4096, 262144) edges, and a few at random. */
const sizeArb = fc.oneof(fc.constantFrom(1, 63, 64, 65, 4095, 4096, 4097, 262_145), fc.integer({ min: 1, max: 300_000 }));

function opsArb(size: number): fc.Arbitrary<Op[]> {
  const pos = fc.oneof(fc.integer({ min: 0, max: size + 2 }), fc.integer({ min: 0, max: Math.ceil(size / 64) }).map((w) => w * 64), fc.constant(size - 1));
  const len = fc.oneof(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: size + 10 }));
  const range = fc.tuple(pos, len);
  return fc.array(
    fc.oneof(
      { weight: 4, arbitrary: range.map(([start, length]) => ({ kind: 'set' as const, start, length })) },
      { weight: 3, arbitrary: range.map(([start, length]) => ({ kind: 'reset' as const, start, length })) },
      { weight: 1, arbitrary: fc.array(range, { maxLength: 4 }).map((ranges) => ({ kind: 'merge' as const, ranges })) },
      { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'roundtrip' as const }) },
    ),
    { maxLength: 60 },
  );
}

/** Every question the job asks, at positions chosen by the sequence's own edges. */
function agree(wasm: ReturnType<Kernel['newBitmap']>, ref: ReferenceBitmap, probes: number[]): void {
  expect(wasm.count).toBe(ref.count);
  for (const p of probes) {
    const at = Math.min(Math.max(0, p), ref.size + 1);
    expect(wasm.nextDirty(at), `nextDirty(${at})`).toBe(ref.nextDirty(at));
    expect(wasm.nextClean(at), `nextClean(${at})`).toBe(ref.nextClean(at));
    expect(wasm.nextDirtyRun(at, 100), `nextDirtyRun(${at})`).toEqual(ref.nextDirtyRun(at, 100));
    expect(wasm.countRange(at, 777), `countRange(${at})`).toBe(ref.countRange(at, 777));
    if (at < ref.size) expect(wasm.get(at)).toBe(ref.get(at));
  }
}

describe('kernel bitmap (fast-check)', () => {
  it('any sequence of set, reset, merge, clear and checkpoint round trips answers as the reference', () => {
    fc.assert(
      fc.property(
        sizeArb.chain((size) => fc.tuple(fc.constant(size), opsArb(size))),
        ([size, ops]) => {
          const wasm = kernel.newBitmap(size);
          const ref = new ReferenceBitmap(size);
          const probes = [0, size - 1, size];
          try {
            for (const op of ops) {
              if (op.kind === 'set' || op.kind === 'reset') {
                wasm[op.kind](op.start, op.length);
                ref[op.kind](op.start, op.length);
                probes.push(op.start, op.start + op.length, op.start - 1);
              } else if (op.kind === 'merge') {
                const other = kernel.newBitmap(size);
                const otherRef = new ReferenceBitmap(size);
                for (const [s, l] of op.ranges) {
                  other.set(s, l);
                  otherRef.set(s, l);
                }
                wasm.merge(other);
                ref.merge(otherRef);
                other.free();
              } else if (op.kind === 'clear') {
                wasm.clear();
                ref.clear();
              } else {
                // The checkpoint's path: plain, compacted, expanded, read into a fresh bitmap.
                const plain = wasm.serialize();
                const compact = compactBitmap(plain);
                expect(dirtyChunks(compact)).toBe(ref.count);
                expect(expandBitmap(compact)).toEqual(plain);
                const back = kernel.newBitmap(size);
                back.deserialize(compact);
                agree(back, ref, probes.slice(-12));
                back.free();
              }
            }
            agree(wasm, ref, probes);
          } finally {
            wasm.free();
          }
        },
      ),
      { numRuns: runs(150) },
    );
  });

  it('a damaged checkpoint bitmap is refused by name or read as some bitmap of the right size, never a crash', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), (size, flips) => {
        const a = kernel.newBitmap(size);
        a.set(Math.floor(size / 3), Math.ceil(size / 5));
        const compact = compactBitmap(a.serialize());
        for (const [at, value] of flips) compact[at % compact.length] = value;
        const b = kernel.newBitmap(size);
        try {
          b.deserialize(compact);
          expect(b.count).toBeLessThanOrEqual(size);
        } catch (err) {
          expect(err).toBeInstanceOf(RangeError);
          expect((err as Error).message).toMatch(/bitmap/);
        } finally {
          a.free();
          b.free();
        }
      }),
      { numRuns: runs(300) },
    );
  });
});

describe('the checkpoint file (fast-check)', () => {
  it('a job state saved by the command reads back the same: options, size, status, images and the bitmap', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { SidecarCheckpointer, readSidecar } = await import('../../src/cli/sidecar.js');
    const { resolveOptions } = await import('../../src/mirror/options.js');
    const dir = mkdtempSync(join(tmpdir(), 'diskmirror-sidecar-prop-'));
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 200_000 }),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 5000 })), { maxLength: 20 }),
          fc.constantFrom('report', 'ignore', 'stop', 'enospc', 'auto'),
          fc.constantFrom(512, 65536, 1 << 20),
          fc.boolean(),
          async (chunks, ranges, policy, granularity, final) => {
            const bitmap = kernel.newBitmap(chunks);
            for (const [start, length] of ranges) bitmap.set(start % chunks, length);
            const options = resolveOptions({ sync: 'full', granularity, 'on-source-error': policy }, { targetIsZero: true });
            const stamp = { name: '/d/src.raw', key: 'node:1:2', size: chunks * granularity, modifiedMs: 1_700_000_000_000.5 };
            const images = { source: [stamp], target: { ...stamp, name: '/d/dst.raw', key: 'node:1:3' } };
            const path = join(dir, 'dst.raw.dmcheckpoint');
            const saver = new SidecarCheckpointer(path, { source: '/d/src.raw', target: '/d/dst.raw', sourceFormat: 'raw', targetFormat: 'raw' }, async () => images);
            const serialized = compactBitmap(bitmap.serialize());
            await saver.save({ id: options.id, options, size: chunks * granularity, status: 'running', offset: 0, bitmap: serialized, savedAt: 1234 });
            if (final) saver.seal(images);
            saver.stop();
            const read = readSidecar(path)!;
            expect(read).toMatchObject({ options, size: chunks * granularity, status: 'running', savedAt: 1234, images, final });
            const back = kernel.newBitmap(chunks);
            back.deserialize(read.bitmapBytes);
            expect(back.count).toBe(bitmap.count);
            for (const [start] of ranges) expect(back.nextDirty(start % chunks)).toBe(bitmap.nextDirty(start % chunks));
            bitmap.free();
            back.free();
          },
        ),
        { numRuns: runs(100) },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
