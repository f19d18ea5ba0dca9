/**
 * What formats that map guest blocks to places in their file (vpc, vdi)
 * share: walking a request block by block, writing zeroes into the file,
 * and running allocations one at a time.
 */
import type { BlockDevice } from '../block/block-device.js';
import { type BlockStatus, type BlockStatusOptions, zeroBuffer } from './image-format.js';

/** Calls `each` for the pieces of [offset, offset + bytes) that do not cross a block boundary, in order. */
export async function forEachPiece(offset: number, bytes: number, blockBytes: number, each: (at: number, done: number, piece: number) => Promise<void>): Promise<void> {
  for (let done = 0; done < bytes; ) {
    const at = offset + done;
    const piece = Math.min(bytes - done, blockBytes - (at % blockBytes));
    await each(at, done, piece);
    done += piece;
  }
}

/** Reads guest bytes through a block map: `hostOffset` places a guest offset in `file`, or null (reads as zeroes). */
export function readMapped(file: BlockDevice, offset: number, into: Uint8Array, blockBytes: number, hostOffset: (offset: number) => number | null): Promise<void> {
  return forEachPiece(offset, into.length, blockBytes, async (at, done, piece) => {
    const host = hostOffset(at);
    const view = into.subarray(done, done + piece);
    if (host === null) view.fill(0);
    else await file.read(host, view);
  });
}

/**
 * The status of the extent at `offset` (at most `bytes`, clamped to `size`)
 * of a block map: data where `hostOffset` places the block, zero where it
 * places none; with `contiguous`, data stored elsewhere in the file ends
 * the extent.
 */
export function mappedBlockStatus(offset: number, bytes: number, size: number, blockBytes: number, hostOffset: (offset: number) => number | null, options?: BlockStatusOptions): BlockStatus {
  const length = Math.max(0, Math.min(bytes, size - offset));
  const host = hostOffset(offset);
  let run = Math.min(length, blockBytes - (offset % blockBytes));
  while (run < length) {
    const next = hostOffset(offset + run);
    if ((next === null) !== (host === null)) break;
    if (host !== null && options?.contiguous && next !== host + run) break;
    run += Math.min(length - run, blockBytes);
  }
  return host === null ? { offset, bytes: run, kind: 'zero', depth: 0 } : { offset, bytes: run, kind: 'data', depth: 0, hostOffset: host };
}

/** Writes `bytes` zeroes into `file` at `offset`. */
export async function writeZeroBytes(file: BlockDevice, offset: number, bytes: number): Promise<void> {
  for (let done = 0; done < bytes; ) {
    const piece = zeroBuffer(bytes - done);
    await file.write(offset + done, piece);
    done += piece.length;
  }
}

/** Runs tasks one at a time, in the order given (a failed task does not stop the next). */
export class Serial {
  private last: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.last.then(task, task);
    this.last = next.catch(() => {});
    return next;
  }
}
