/**
 * Whether two images show a guest the same bytes (the question `qemu-img
 * compare` answers, without its report of where they differ): read both a
 * MiB at a time, holes and backing files included, whatever their formats.
 */
import type { ImageFormat } from './image-format.js';

const STEP = 1 << 20;

export async function sameContent(a: ImageFormat, b: ImageFormat): Promise<boolean> {
  if (a.size !== b.size) return false;
  const x = new Uint8Array(STEP);
  const y = new Uint8Array(STEP);
  for (let at = 0; at < a.size; at += STEP) {
    const n = Math.min(STEP, a.size - at);
    await Promise.all([a.read(at, x.subarray(0, n)), b.read(at, y.subarray(0, n))]);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}
