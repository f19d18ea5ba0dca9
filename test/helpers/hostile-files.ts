/**
 * The files of a hostile-input suite: a temporary directory made before
 * the suite (once qemu-img and the built command are known to be there)
 * and removed after it, and a fresh name in it for each mutated image.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { FormatError } from '../../src/format/image-format.js';
import { requireQemu, tempDir } from './qemu.js';
import { requireBuiltCommand } from './require-program.js';

export function hostileFiles(prefix: string): { name(ext: string): string } {
  let dir: ReturnType<typeof tempDir> | undefined;
  let n = 0;
  beforeAll(() => {
    requireQemu();
    requireBuiltCommand();
    dir = tempDir(prefix);
  });
  afterAll(() => dir?.remove());
  return { name: (ext) => dir!.file(`h${++n}.${ext}`) };
}

/** A mutated image refused as it must be: a FormatError that names the field it found wrong (`what`: the mutation, for the message). */
export function expectFieldRefusal(error: unknown, what: string): void {
  expect(error, `${what}: ${String(error)}`).toBeInstanceOf(FormatError);
  expect((error as FormatError).field, `${what}: ${(error as Error).message}`).toBeTruthy();
}
