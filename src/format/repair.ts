/**
 * After an interruption (a killed process, a closed tab), a qcow2 image may
 * hold leaked clusters: the metadata order QEMU uses guarantees a crash
 * leaks, never corrupts. A resumed job first gives them back, as
 * `qemu-img check -r leaks` would, so the finished copy checks clean.
 */
import type { ImageFormat } from './image-format.js';
import { FormatError } from './image-format.js';
import { checkImage, repairRefcounts } from './qcow2/check.js';
import { Qcow2Image } from './qcow2/image.js';

export interface RepairResult {
  leaks: number;
}

/** Frees leaked clusters of a writable qcow2 image; refuses (FormatError) when it finds corruption. */
export async function repairLeaks(image: ImageFormat): Promise<RepairResult> {
  if (!(image instanceof Qcow2Image) || image.readOnly) return { leaks: 0 };
  const result = await checkImage(image);
  if (result.corruptions > 0 || result.checkErrors > 0) {
    throw new FormatError(`the target is corrupt, not only leaking: ${result.messages[0] ?? 'corrupt metadata'} (run diskmirror check)`, 'refcounts');
  }
  if (result.leaks > 0) {
    await repairRefcounts(image);
    await image.flush();
  }
  return { leaks: result.leaks };
}
