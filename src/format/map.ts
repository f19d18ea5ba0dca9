/**
 * The map of an image, as `qemu-img map --output=json` prints it: extents
 * with start, length, depth, present, zero, data and (for data stored as
 * is, and zeroes that have a place in the file) the offset in the file. Built from block status, so it works for any
 * format and follows the backing chain.
 */
import type { ImageFormat } from './image-format.js';

export interface MapExtent {
  start: number;
  length: number;
  /** The image of the chain the extent comes from (0: the image itself). */
  depth: number;
  /** Allocated in some image of the chain (false: reads as zeroes because nothing has it). */
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Bytes of block status asked at a time. */
const STEP_BYTES = 2 ** 40;

/** Walks the whole image, calling `onExtent` with merged extents in order. */
export async function mapImage(image: ImageFormat, onExtent: (e: MapExtent) => void): Promise<void> {
  let pending: MapExtent | null = null;
  for (let offset = 0; offset < image.size; ) {
    const s = await image.blockStatus(offset, Math.min(STEP_BYTES, image.size - offset), { contiguous: true });
    if (s.bytes <= 0) throw new Error(`block status made no progress at offset ${offset}`);
    const e: MapExtent =
      s.kind === 'data'
        ? { start: offset, length: s.bytes, depth: s.depth, present: true, zero: false, data: true }
        : s.kind === 'zero'
          ? { start: offset, length: s.bytes, depth: s.depth, present: true, zero: true, data: false }
          : { start: offset, length: s.bytes, depth: Math.max(0, s.depth - 1), present: false, zero: true, data: false };
    // Zeroes with a place in the file (a hole in a raw file, a zero-allocated cluster) have an offset too, as QEMU says.
    if (s.kind !== 'unallocated' && s.hostOffset !== undefined) e.offset = s.hostOffset;
    if (pending && mergeable(pending, e)) {
      pending.length += e.length;
    } else {
      if (pending) onExtent(pending);
      pending = e;
    }
    offset += s.bytes;
  }
  if (pending) onExtent(pending);
}

function mergeable(a: MapExtent, b: MapExtent): boolean {
  if (a.depth !== b.depth || a.present !== b.present || a.zero !== b.zero || a.data !== b.data) return false;
  if (a.offset === undefined && b.offset === undefined) return true;
  return a.offset !== undefined && b.offset !== undefined && a.offset + a.length === b.offset;
}
