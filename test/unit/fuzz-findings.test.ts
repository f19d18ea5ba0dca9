/**
 * What the fuzzer found (npm run fuzz), each kept fixed here:
 *
 * - A checkpoint with its options missing, null or invalid crashed the
 *   resume with a TypeError, or asked for a buffer pool of 64 GiB; its
 *   image stamps were used without a look at their types.
 * - A bitmap (or buffer) placed past 2 GiB of kernel memory came back with a
 *   negative address (wasm's i32), and its checkpoint could not be written.
 * - Kernel memory that could not grow trapped inside the allocator
 *   ("RuntimeError: unreachable") instead of saying so.
 * - A job refused at creation (its resume bitmap damaged) left its bitmaps
 *   and buffers in a kernel shared with other jobs.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSidecar } from '../../src/cli/sidecar.js';
import { Kernel, KernelError } from '../../src/kernel/kernel.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { OptionError, resolveOptions } from '../../src/mirror/options.js';
import { blankRaw, memoryRaw } from '../helpers/images.js';
import { tempDir } from '../helpers/qemu.js';

const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('diskmirror-fuzz-findings-');
});
afterAll(() => dir.remove());

const stamp = { name: '/x/src.raw', key: 'node:1:2', size: MiB, modifiedMs: 1 };
function sidecar(changes: Record<string, unknown>): Record<string, unknown> {
  return {
    kind: 'diskmirror-checkpoint',
    version: 2,
    source: '/x/src.raw',
    target: '/x/dst.raw',
    sourceFormat: 'raw',
    targetFormat: 'raw',
    size: MiB,
    options: resolveOptions({ sync: 'full' }, { targetIsZero: true }),
    status: 'running',
    savedAt: 1,
    bitmap: 'RE1CTQEAAAAAAAAAAAAwQAAAAAAAAAAA',
    images: { source: [stamp], target: { ...stamp, name: '/x/dst.raw' } },
    final: false,
    ...changes,
  };
}

function read(contents: Record<string, unknown>): unknown {
  const path = dir.file('dst.raw.dmcheckpoint');
  writeFileSync(path, JSON.stringify(contents));
  return readSidecar(path);
}

describe('a damaged checkpoint is refused by name, never a crash', () => {
  it('reads a whole one', () => {
    expect(read(sidecar({}))).toMatchObject({ size: MiB, bitmapBytes: expect.any(Uint8Array) });
  });

  const options = resolveOptions({ sync: 'full' }, { targetIsZero: true });
  for (const [what, changes, why] of [
    ['options missing', { options: undefined }, /its options/],
    ['options null', { options: null }, /its options/],
    ['options a list', { options: [1] }, /its options/],
    ['a buffer of 64 GiB', { options: { ...options, bufSize: 2 ** 36 } }, /its options: Parameter 'buf-size' expects at most 512 MiB/],
    ['a granularity of 64 GiB', { options: { ...options, granularity: 2 ** 36 } }, /its options: Parameter 'granularity'/],
    ['a policy unknown', { options: { ...options, onSourceError: 'N' } }, /its options: Parameter 'on-source-error'/],
    ['a size as text', { size: '1M' }, /its size/],
    ['an image stamp null', { images: { source: [null], target: stamp } }, /its image stamps/],
    ['a stamp with no key', { images: { source: [stamp], target: { name: 'x', size: 1, modifiedMs: 1 } } }, /its image stamps/],
    ['no final mark', { final: 'yes' }, /its final mark/],
  ] as const) {
    it(`refuses ${what}`, () => {
      expect(() => read(sidecar(changes as Record<string, unknown>))).toThrow(why);
      expect(() => read(sidecar(changes as Record<string, unknown>))).toThrow(/is damaged .* cannot be resumed; delete it/);
    });
  }

  it('refuses a buf-size over 512 MiB as an option error', () => {
    expect(() => resolveOptions({ sync: 'full', 'buf-size': 2 ** 31 }, { targetIsZero: true })).toThrow(OptionError);
  });
});

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

describe('a job refused at creation', () => {
  it('leaves nothing in a shared kernel', async () => {
    const kernel = await Kernel.create();
    const attempt = async () => {
      await expect(
        MirrorJob.create({
          source: memoryRaw(4 * MiB).image,
          target: blankRaw(4 * MiB).image,
          options: { sync: 'full', 'buf-size': 64 * MiB },
          kernel,
          resume: { bitmap: new Uint8Array([1, 2, 3]) },
        }),
      ).rejects.toThrow(/serialized bitmap/);
    };
    await attempt();
    const after = kernel.memory.buffer.byteLength;
    for (let i = 0; i < 20; i++) await attempt();
    expect(kernel.memory.buffer.byteLength).toBe(after);
  });
});

describe('a bitmap the kernel cannot hold (found while fixing the above)', () => {
  it('an 8 TiB image at granularity 512 is refused before anything is created, naming the granularity that works', async () => {
    const { execFileSync } = await import('node:child_process');
    const { existsSync } = await import('node:fs');
    const { run, assertBuilt } = await import('../helpers/cli.js');
    assertBuilt();
    const src = dir.file('huge.raw');
    execFileSync('truncate', ['-s', '8T', src]);
    const out = dir.file('huge-copy.raw');
    const r = await run(['mirror', '--granularity', '512', src, out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('too large for granularity 512');
    expect(r.stderr).toContain('use a granularity of 2048 or more');
    expect(existsSync(out)).toBe(false);
  });
});
