/**
 * The checkpoint file next to the target (src/cli/sidecar.ts): a damaged one
 * is refused by name, never a crash (the fuzzer, npm run fuzz, found
 * checkpoints whose options were missing, null or invalid crash the resume
 * with a TypeError or ask for a buffer pool of 64 GiB, and image stamps used
 * without a look at their types).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSidecar } from '../../src/cli/sidecar.js';
import { OptionError, resolveOptions } from '../../src/mirror/options.js';
import { tempDir } from '../helpers/qemu.js';

const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('diskmirror-checkpoint-file-');
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
