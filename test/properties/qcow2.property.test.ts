/**
 * qcow2 against a model of the virtual disk (a plain byte array), found by
 * fast-check: any sequence of writes, zero writes (with and without unmap),
 * discards, flushes and reopenings, at any offsets (across cluster and L2
 * table edges), reads back as the model says, and leaves an image that our
 * check and `qemu-img check` find clean and `qemu-img compare` finds equal
 * to the model.
 */
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { runs } from './runs.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { checkImage } from '../../src/format/qcow2/check.js';
import { createQcow2 } from '../../src/format/qcow2/create.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { qemuCheck, qemuCompare, tempDir } from '../helpers/qemu.js';
import { requireProgram } from '../helpers/require-program.js';

const KiB = 1024;

type Op =
  | { kind: 'write'; offset: number; bytes: number; fill: number }
  | { kind: 'zero'; offset: number; bytes: number; unmap: boolean }
  | { kind: 'discard'; offset: number; bytes: number }
  | { kind: 'flush' }
  | { kind: 'reopen' };

interface Layout {
  clusterSize: number;
  size: number;
  extendedL2: boolean;
  refcountBits: number;
}

const layoutArb: fc.Arbitrary<Layout> = fc.record({
  // Small clusters make L2 tables and refcount blocks small: edges are crossed often.
  clusterSize: fc.constantFrom(512, 4 * KiB, 64 * KiB),
  size: fc.integer({ min: 1, max: 48 }).map((n) => n * 64 * KiB + (n % 3) * 512),
  extendedL2: fc.boolean(),
  refcountBits: fc.constantFrom(1, 16, 64),
  // Extended L2 entries need clusters of 16 KiB or more (as QEMU).
}).map((l) => ({ ...l, extendedL2: l.extendedL2 && l.clusterSize >= 16 * KiB }));

function opsArb(l: Layout): fc.Arbitrary<Op[]> {
  const cs = l.clusterSize;
  const offset = fc.oneof(fc.integer({ min: 0, max: l.size - 1 }), fc.integer({ min: 0, max: Math.floor((l.size - 1) / cs) }).map((c) => c * cs));
  const range = offset.chain((o) =>
    fc.tuple(fc.constant(o), fc.oneof(fc.integer({ min: 1, max: Math.min(3 * cs, l.size - o) }), fc.integer({ min: 1, max: l.size - o }))),
  );
  return fc.array(
    fc.oneof(
      { weight: 5, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([[o, b], fill]) => ({ kind: 'write' as const, offset: o, bytes: b, fill })) },
      { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([[o, b], unmap]) => ({ kind: 'zero' as const, offset: o, bytes: b, unmap })) },
      { weight: 2, arbitrary: range.map(([o, b]) => ({ kind: 'discard' as const, offset: o, bytes: b })) },
      { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
    ),
    { minLength: 1, maxLength: 25 },
  );
}

/** A write's bytes: its fill value, varied along the range so misplaced bytes show. */
function bytesFor(op: { offset: number; bytes: number; fill: number }): Uint8Array {
  const out = new Uint8Array(op.bytes);
  for (let i = 0; i < out.length; i++) out[i] = (op.fill + ((op.offset + i) >>> 9)) & 0xff || 1;
  return out;
}

let dir: ReturnType<typeof tempDir>;
let n = 0;
beforeAll(() => {
  requireProgram('qemu-img', 'the oracle these tests compare with');
  dir = tempDir('diskmirror-qcow2-prop-');
});
afterAll(() => dir?.remove());

describe('qcow2 against a model of the disk (fast-check)', () => {
  it('writes, zero writes, discards, flushes and reopenings read back as the model, and the image checks clean', async () => {
    await fc.assert(
      fc.asyncProperty(
        layoutArb.chain((l) => fc.tuple(fc.constant(l), opsArb(l))),
        async ([layout, ops]) => {
          let device = new MemoryDevice();
          await createQcow2(device, { size: layout.size, clusterSize: layout.clusterSize, extendedL2: layout.extendedL2, refcountBits: layout.refcountBits });
          let image = await Qcow2Image.open(device);
          const model = new Uint8Array(layout.size);
          const cs = layout.clusterSize;
          for (const op of ops) {
            if (op.kind === 'write') {
              const data = bytesFor(op);
              await image.write(op.offset, data);
              model.set(data, op.offset);
            } else if (op.kind === 'zero') {
              await image.writeZeroes(op.offset, op.bytes, { unmap: op.unmap });
              model.fill(0, op.offset, op.offset + op.bytes);
            } else if (op.kind === 'discard') {
              // Whole clusters only (a partial one is left alone), as QEMU; a discarded cluster reads as zero (no backing).
              await image.discard(op.offset, op.bytes);
              const end = op.offset + op.bytes;
              const first = Math.ceil(op.offset / cs) * cs;
              const last = end === layout.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
              if (last > first) model.fill(0, first, Math.min(last, layout.size));
            } else if (op.kind === 'flush') {
              await image.flush();
            } else {
              // Closing closes the file too: the bytes open again as a new one.
              await image.close();
              device = new MemoryDevice(device.bytes());
              image = await Qcow2Image.open(device);
            }
          }
          const back = new Uint8Array(layout.size);
          await image.read(0, back);
          const diff = back.findIndex((b, i) => b !== model[i]);
          expect(diff, `first byte that differs from the model (of ${layout.size})`).toBe(-1);
          await image.close();
          device = new MemoryDevice(device.bytes());
          const reopened = await Qcow2Image.open(device, { readOnly: true });
          const check = await checkImage(reopened);
          expect(check.messages, 'our check').toEqual([]);
          expect(check.corruptions + check.leaks + check.checkErrors).toBe(0);
          await reopened.close();
          // QEMU's word on it.
          const file = dir.file(`p${++n}.qcow2`);
          const raw = dir.file(`p${n}.raw`);
          writeFileSync(file, device.bytes());
          writeFileSync(raw, model);
          expect(await qemuCheck(file), 'qemu-img check').toMatchObject({ code: 0, corruptions: 0, leaks: 0 });
          const cmp = await qemuCompare(file, raw);
          expect(cmp.code, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`).toBe(0);
        },
      ),
      { numRuns: runs(60) },
    );
  });
});
