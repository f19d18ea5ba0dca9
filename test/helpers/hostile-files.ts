/**
 * The files of a hostile-input suite: a temporary directory made before
 * the suite (once qemu-img and the built command are known to be there)
 * and removed after it, and a fresh name in it for each mutated image.
 */
import { afterAll, beforeAll } from 'vitest';
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
