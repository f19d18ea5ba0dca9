/**
 * A dynamic VHD's tables: the dynamic disk header and the block allocation
 * table (BAT), checked before use: the block size a power of two, the
 * table holding the whole disk and lying inside the file, every allocated
 * block inside the file, past the table and clear of every other block.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import {
  BAT_ENTRY_BYTES,
  BAT_UNALLOCATED,
  DH_BLOCK_SIZE,
  DH_CHECKSUM,
  DH_COOKIE,
  DH_DATA_OFFSET,
  DH_MAX_TABLE_ENTRIES,
  DH_TABLE_OFFSET,
  DH_VERSION,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_BYTES,
  FOOTER_BYTES,
  MAX_SECTORS,
  SECTOR_BYTES,
} from './constants.js';
import { ascii, setU64, u64Field, vpcChecksum } from './footer.js';

/** Largest BAT read (entries): 64 MiB of table; a 2 MiB-block disk of 2040 GiB has 1 Mi entries. */
export const MAX_BAT_ENTRIES = 1 << 24;

export interface DynamicLayout {
  blockBytes: number;
  /** The sector bitmap before each block's data: a bit a sector, whole sectors. */
  bitmapBytes: number;
  batOffset: number;
  /** Entries of the table, as the header says (at least the disk's blocks). */
  entries: number;
  /** Sector of each block's bitmap, or BAT_UNALLOCATED. */
  bat: Uint32Array;
  /** Where the next block goes: after the last block (or the table), where the footer is. */
  freeOffset: number;
}

export function bitmapBytesOf(blockBytes: number): number {
  return Math.ceil(blockBytes / (8 * SECTOR_BYTES) / SECTOR_BYTES) * SECTOR_BYTES;
}

/** Reads and checks the dynamic header at `headerOffset` and the BAT it names, for a disk of `virtualSize`. */
export async function readDynamicLayout(file: BlockDevice, headerOffset: number, virtualSize: number): Promise<DynamicLayout> {
  const fileSize = file.size;
  if (headerOffset % SECTOR_BYTES !== 0 || headerOffset < FOOTER_BYTES || headerOffset + DYNAMIC_HEADER_BYTES > fileSize) {
    throw new FormatError(`vpc footer field data_offset is ${headerOffset}: no dynamic header there in a file of ${fileSize} bytes`, 'data_offset');
  }
  const header = new Uint8Array(DYNAMIC_HEADER_BYTES);
  await file.read(headerOffset, header);
  if (ascii(header, DH_COOKIE, 8) !== DYNAMIC_COOKIE) throw new FormatError(`vpc dynamic header at ${headerOffset} has no "cxsparse" cookie`, 'cookie');
  const view = new DataView(header.buffer);
  const blockBytes = view.getUint32(DH_BLOCK_SIZE, false);
  if (blockBytes < SECTOR_BYTES || (blockBytes & (blockBytes - 1)) !== 0) {
    throw new FormatError(`vpc dynamic header field block_size is ${blockBytes} (expected a power of two, at least 512)`, 'block_size');
  }
  const entries = view.getUint32(DH_MAX_TABLE_ENTRIES, false);
  const needed = Math.ceil(virtualSize / blockBytes);
  if (entries < needed) throw new FormatError(`vpc dynamic header field max_table_entries is ${entries}: ${needed} blocks of ${blockBytes} bytes are needed for ${virtualSize} bytes`, 'max_table_entries');
  if (entries > Math.floor((MAX_SECTORS * SECTOR_BYTES) / blockBytes) || entries > MAX_BAT_ENTRIES) {
    throw new FormatError(`vpc dynamic header field max_table_entries is ${entries}: more than ${Math.min(MAX_BAT_ENTRIES, Math.floor((MAX_SECTORS * SECTOR_BYTES) / blockBytes))}`, 'max_table_entries');
  }
  const batOffset = u64Field(view, DH_TABLE_OFFSET, 'dynamic header', 'table_offset');
  const batBytes = entries * BAT_ENTRY_BYTES;
  if (batOffset < FOOTER_BYTES || batOffset + batBytes > fileSize) {
    throw new FormatError(`vpc dynamic header field table_offset is ${batOffset}: a table of ${batBytes} bytes there does not fit in a file of ${fileSize} bytes`, 'table_offset');
  }
  const raw = new Uint8Array(batBytes);
  await file.read(batOffset, raw);
  const rawView = new DataView(raw.buffer);
  const bat = new Uint32Array(entries);
  const bitmapBytes = bitmapBytesOf(blockBytes);
  const batEnd = Math.ceil((batOffset + batBytes) / SECTOR_BYTES) * SECTOR_BYTES;
  const metadataEnd = Math.max(batEnd, headerOffset + DYNAMIC_HEADER_BYTES);
  const span = bitmapBytes + blockBytes;
  let freeOffset = batEnd;
  const starts: number[] = [];
  for (let i = 0; i < entries; i++) {
    const entry = rawView.getUint32(i * BAT_ENTRY_BYTES, false);
    bat[i] = entry;
    if (entry === BAT_UNALLOCATED) continue;
    const start = entry * SECTOR_BYTES;
    // A block past the disk's end is never read: only the disk's own blocks must make sense.
    if (i >= needed) continue;
    if (start < metadataEnd || start + span > fileSize) {
      throw new FormatError(`vpc BAT entry ${i} is sector ${entry}: a block of ${span} bytes there is ${start < metadataEnd ? 'inside the headers or the table' : `past the end of the file (${fileSize} bytes): the image is truncated`}`, 'bat');
    }
    starts.push(start);
    freeOffset = Math.max(freeOffset, start + span);
  }
  starts.sort((a, b) => a - b);
  for (let i = 1; i < starts.length; i++) {
    if (starts[i]! - starts[i - 1]! < span) throw new FormatError(`vpc BAT has blocks at ${starts[i - 1]} and ${starts[i]} overlapping (a block takes ${span} bytes)`, 'bat');
  }
  return { blockBytes, bitmapBytes, batOffset, entries, bat, freeOffset };
}

/** A new dynamic disk header (checksum included) for `entries` blocks of `blockBytes`, its table at `batOffset`. */
export function buildDynamicHeader(entries: number, blockBytes: number, batOffset: number): Uint8Array {
  const out = new Uint8Array(DYNAMIC_HEADER_BYTES);
  const view = new DataView(out.buffer);
  out.set(Array.from(DYNAMIC_COOKIE, (c) => c.charCodeAt(0)), DH_COOKIE);
  // The specification says 0xffffffff; Microsoft's tools want all 64 bits set, as qemu-img writes.
  view.setUint32(DH_DATA_OFFSET, 0xffffffff, false);
  view.setUint32(DH_DATA_OFFSET + 4, 0xffffffff, false);
  setU64(view, DH_TABLE_OFFSET, batOffset);
  view.setUint32(DH_VERSION, 0x00010000, false);
  view.setUint32(DH_MAX_TABLE_ENTRIES, entries, false);
  view.setUint32(DH_BLOCK_SIZE, blockBytes, false);
  view.setUint32(DH_CHECKSUM, vpcChecksum(out, DH_CHECKSUM), false);
  return out;
}
