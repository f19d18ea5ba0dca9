/**
 * After an interruption (a killed process, a closed tab), a qcow2 image may
 * hold leaked clusters: the metadata order QEMU uses guarantees a crash
 * leaks, never corrupts. A resumed job first gives them back, as
 * `qemu-img check -r leaks` would, and those counted past the end of the
 * file (which no check sees yet), so the finished copy checks clean.
 */
import type { ImageFormat } from './image-format.js';
import { Qcow2Image } from './qcow2/image.js';
import { freeLeaks } from './qcow2/repair.js';

export interface RepairResult {
  leaks: number;
}

/** Frees leaked clusters of a writable qcow2 image; refuses (FormatError) when it finds corruption. */
export async function repairLeaks(image: ImageFormat): Promise<RepairResult> {
  if (!(image instanceof Qcow2Image) || image.readOnly) return { leaks: 0 };
  return { leaks: await freeLeaks(image) };
}
