/**
 * The VHDX block allocation table: one entry per payload block, and after
 * every `chunkRatio` of them one sector bitmap entry (used by differencing
 * images only, never read here). Each payload entry is a state (bits 0-2)
 * and, for a block in the file, its offset in MiB (bits 20-63).
 *
 * Kept as two arrays indexed by payload block (state and offset in MiB),
 * read in 1 MiB pieces: the table lies inside the file, so a hostile image
 * costs at most memory in proportion to its own size.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { BAT_ENTRY_BYTES, BAT_STATE_MASK, HEADER_SECTION_END, MiB, PAYLOAD_FULLY_PRESENT } from './constants.js';
import type { Region } from './header.js';

export interface Bat {
  /** Payload blocks of the disk. */
  blocks: number;
  chunkRatio: number;
  /** Entries the table has, sector bitmap entries included (qemu-img's count). */
  entries: number;
  /** Each payload block's state. */
  states: Uint8Array;
  /** Each payload block's offset in the file, in MiB (as stored; meaningful for blocks in the file). */
  offsetsMiB: Uint32Array;
}

/** Entries a table has for `blocks` payload blocks (qemu-img's 32-bit arithmetic: a disk of no block still has a table). */
export function batEntries(blocks: number, chunkRatio: number): number {
  const bits = Math.log2(chunkRatio);
  return blocks + (((blocks - 1) >>> 0) >>> bits);
}

/** The table index of payload block `block`. */
export function batIndex(block: number, chunkRatio: number): number {
  return block + Math.floor(block / chunkRatio);
}

/** Reads the payload entries of the table in `region` for a disk of `blocks` payload blocks. */
export async function readBat(file: BlockDevice, region: Region, blocks: number, chunkRatio: number): Promise<Bat> {
  const entries = batEntries(blocks, chunkRatio);
  if (entries * BAT_ENTRY_BYTES > region.bytes) {
    throw new FormatError(`vhdx BAT region of ${region.bytes} bytes is too small for ${entries} entries (${blocks} blocks)`, 'bat');
  }
  const states = new Uint8Array(blocks);
  const offsetsMiB = new Uint32Array(blocks);
  const PIECE = MiB / BAT_ENTRY_BYTES;
  // Past the last payload entry there are only sector bitmap entries (a disk of no block has megabytes of them): not read.
  const used = blocks === 0 ? 0 : batIndex(blocks - 1, chunkRatio) + 1;
  const raw = new Uint8Array(Math.min(used, PIECE) * BAT_ENTRY_BYTES);
  const view = new DataView(raw.buffer);
  for (let first = 0; first < used; first += PIECE) {
    const count = Math.min(PIECE, used - first);
    const piece = raw.subarray(0, count * BAT_ENTRY_BYTES);
    await file.read(region.offset + first * BAT_ENTRY_BYTES, piece);
    for (let i = 0; i < count; i++) {
      const index = first + i;
      // Every (chunkRatio + 1)th entry is a sector bitmap's.
      if (index % (chunkRatio + 1) === chunkRatio) continue;
      const block = index - Math.floor(index / (chunkRatio + 1));
      const low = view.getUint32(i * BAT_ENTRY_BYTES, true);
      const high = view.getUint32(i * BAT_ENTRY_BYTES + 4, true);
      states[block] = low & BAT_STATE_MASK;
      // The offset in MiB is bits 20-63: past 2^32 MiB (4 PiB) it lies past any file, and is kept as 0xffffffff.
      offsetsMiB[block] = high >= 1 << 20 ? 0xffffffff : high * 4096 + (low >>> 20);
    }
  }
  return { blocks, chunkRatio, entries, states, offsetsMiB };
}

/**
 * The problems qemu-img finds in the blocks a table places in the file
 * (each FULLY_PRESENT block inside the file, clear of the header section,
 * the log and the regions), in its words. `stopAtFirst` for opening.
 */
export function batProblems(bat: Bat, blockBytes: number, diskBytes: number, fileSize: number, regions: Region[], stopAtFirst: boolean): string[] {
  const problems: string[] = [];
  const reserved = [{ offset: 0, bytes: HEADER_SECTION_END }, ...regions];
  for (let block = 0; block < bat.blocks; block++) {
    if (bat.states[block] !== PAYLOAD_FULLY_PRESENT) continue;
    const index = batIndex(block, bat.chunkRatio);
    const offset = bat.offsetsMiB[block]! * MiB;
    const length = Math.min(blockBytes, diskBytes - block * blockBytes);
    if (offset >= fileSize) {
      problems.push(`VHDX BAT entry ${index} start offset ${offset} points after end of file (${fileSize}). Image has probably been truncated.`);
    } else if (offset + length > fileSize) {
      problems.push(`VHDX BAT entry ${index} end offset ${offset + length - 1} points after end of file (${fileSize}). Image has probably been truncated.`);
    } else if (reserved.some((r) => offset < r.offset + r.bytes && r.offset < offset + blockBytes)) {
      problems.push(`VHDX BAT entry ${index} at offset ${offset} overlaps the header section, the log, the BAT or the metadata`);
    } else continue;
    if (stopAtFirst) break;
  }
  return problems;
}
