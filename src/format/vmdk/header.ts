/**
 * The sparse extent header ("KDMV"): every field qemu-img checks, checked
 * the same way, plus the bounds that keep a hostile header from making
 * diskmirror read or allocate without limit (a FormatError naming the
 * field); the footer that replaces it in a stream; and a new header.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import {
  COMPRESSION_DEFLATE,
  FLAG_COMPRESS,
  FLAG_MARKER,
  FLAG_NL_DETECT,
  FLAG_RGD,
  FLAG_ZERO_GRAIN,
  FOOTER_BYTES,
  GTE_BYTES,
  H_CAPACITY,
  H_CHECK_BYTES,
  H_COMPRESS_ALGORITHM,
  H_DESC_OFFSET,
  H_DESC_SIZE,
  H_FLAGS,
  H_GD_OFFSET,
  H_GRAIN_OFFSET,
  H_GRANULARITY,
  H_MAGIC,
  H_NUM_GTES_PER_GT,
  H_RGD_OFFSET,
  H_VERSION,
  HEADER_BYTES,
  MARKER_END_OF_STREAM,
  MARKER_FOOTER,
  MAX_CAPACITY_SECTORS,
  MAX_GD_ENTRIES,
  MAX_GD_ENTRIES_QEMU,
  MAX_GRAIN_BYTES,
  MAX_GRAIN_SECTORS_QEMU,
  MAX_GTES_PER_GT,
  SECTOR_BYTES,
  VMDK3_MAGIC,
  VMDK4_MAGIC,
} from './constants.js';

export interface SparseHeader {
  version: number;
  flags: number;
  capacitySectors: number;
  grainSectors: number;
  descOffsetSectors: number;
  descSizeSectors: number;
  gtesPerGt: number;
  /** Byte offset of the redundant GD, or 0 when the flag says there is none. */
  rgdOffset: number;
  /** Byte offset of the GD (the footer's, for a stream). */
  gdOffset: number;
  grainOffsetSectors: number;
  compressed: boolean;
  hasMarker: boolean;
  hasZeroGrain: boolean;
  /** Entries of the GD (and RGD). */
  gdEntries: number;
  /** The header was found in the footer (the GD follows the grains). */
  gdAtEnd: boolean;
}

const fail = (field: string, text: string): never => {
  throw new FormatError(`vmdk header field ${field} ${text}`, field);
};

/** A u64 field as a number, refused when it is beyond 2^53 (no file or disk is that large). */
function u64(view: DataView, at: number, field: string): number {
  const lo = view.getUint32(at, true);
  const hi = view.getUint32(at + 4, true);
  if (hi >= 2 ** 21) fail(field, `is ${(BigInt(hi) << 32n) | BigInt(lo)}: too large`);
  return hi * 2 ** 32 + lo;
}

function isGdAtEnd(view: DataView): boolean {
  return view.getUint32(H_GD_OFFSET, true) === 0xffffffff && view.getUint32(H_GD_OFFSET + 4, true) === 0xffffffff;
}

export function hasSparseMagic(head: Uint8Array): boolean {
  return head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false) === VMDK4_MAGIC;
}

export function hasCowdMagic(head: Uint8Array): boolean {
  return head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false) === VMDK3_MAGIC;
}

/**
 * Reads and checks the header of the sparse extent in `file` (and its
 * footer, when the header says the GD is at the end). `writable` refuses
 * what qemu-img refuses to open read-write.
 */
export async function readSparseHeader(file: BlockDevice, writable: boolean): Promise<SparseHeader> {
  const fileSize = file.size;
  if (fileSize < HEADER_BYTES) throw new FormatError(`vmdk extent is ${fileSize} bytes: too small for a header`, 'size');
  let bytes = new Uint8Array(HEADER_BYTES);
  await file.read(0, bytes);
  let view = new DataView(bytes.buffer);
  const magic = view.getUint32(H_MAGIC, false);
  if (magic === VMDK3_MAGIC) throw new FormatError('vmdk extent is a VMware ESX sparse file ("COWD"): not supported', 'magic');
  if (magic !== VMDK4_MAGIC) fail('magic', `is 0x${magic.toString(16)} (expected "KDMV"): not a VMDK sparse extent`);
  if (u64(view, H_CAPACITY, 'capacity') === 0 && u64(view, H_DESC_OFFSET, 'desc_offset') !== 0) {
    throw new FormatError('vmdk sparse file holds a descriptor file (capacity 0): not supported', 'capacity');
  }
  const gdAtEnd = isGdAtEnd(view);
  if (gdAtEnd) {
    if (fileSize < HEADER_BYTES + FOOTER_BYTES) throw new FormatError(`vmdk stream of ${fileSize} bytes is too small for its footer`, 'footer');
    const footer = new Uint8Array(FOOTER_BYTES);
    await file.read(fileSize - FOOTER_BYTES, footer);
    const f = new DataView(footer.buffer);
    const ok =
      f.getUint32(8, true) === 0 &&
      f.getUint32(12, true) === MARKER_FOOTER &&
      f.getUint32(SECTOR_BYTES, false) === VMDK4_MAGIC &&
      f.getUint32(2 * SECTOR_BYTES, true) === 0 &&
      f.getUint32(2 * SECTOR_BYTES + 4, true) === 0 &&
      f.getUint32(2 * SECTOR_BYTES + 8, true) === 0 &&
      f.getUint32(2 * SECTOR_BYTES + 12, true) === MARKER_END_OF_STREAM;
    if (!ok) throw new FormatError('vmdk stream has an invalid footer (its grain directory is at the end, and the last 1536 bytes are no footer and end-of-stream marker)', 'footer');
    bytes = footer.slice(SECTOR_BYTES, 2 * SECTOR_BYTES);
    view = new DataView(bytes.buffer);
    if (isGdAtEnd(view)) fail('gd_offset', 'is at the end in the footer too');
  }
  const version = view.getUint32(H_VERSION, true);
  const flags = view.getUint32(H_FLAGS, true);
  const compressed = view.getUint16(H_COMPRESS_ALGORITHM, true) === COMPRESSION_DEFLATE;
  if (version > 3) throw new FormatError(`Unsupported VMDK version ${version}`, 'version');
  if (version === 3 && writable && !compressed) throw new FormatError('VMDK version 3 must be read only', 'version');
  const gtesPerGt = view.getUint32(H_NUM_GTES_PER_GT, true);
  if (gtesPerGt > MAX_GTES_PER_GT) fail('num_gtes_per_gt', `is ${gtesPerGt}: L2 table size too big (at most ${MAX_GTES_PER_GT})`);
  const grainSectors = u64(view, H_GRANULARITY, 'granularity');
  if (gtesPerGt * grainSectors === 0) fail(gtesPerGt === 0 ? 'num_gtes_per_gt' : 'granularity', 'is 0: L1 entry size is invalid');
  if (grainSectors > MAX_GRAIN_SECTORS_QEMU) fail('granularity', `is ${grainSectors} sectors: Invalid granularity, image may be corrupt`);
  if (grainSectors * SECTOR_BYTES > MAX_GRAIN_BYTES) fail('granularity', `is ${grainSectors} sectors: grains larger than ${MAX_GRAIN_BYTES} bytes are not read by diskmirror`);
  const capacitySectors = u64(view, H_CAPACITY, 'capacity');
  if (capacitySectors > MAX_CAPACITY_SECTORS) fail('capacity', `is ${capacitySectors} sectors: more than ${MAX_CAPACITY_SECTORS}`);
  const gdEntries = Math.ceil(capacitySectors / (gtesPerGt * grainSectors));
  if (gdEntries > MAX_GD_ENTRIES_QEMU) fail('capacity', `is ${capacitySectors} sectors: L1 size too big (${gdEntries} grain directory entries)`);
  if (gdEntries > MAX_GD_ENTRIES) fail('capacity', `is ${capacitySectors} sectors: ${gdEntries} grain directory entries, more than diskmirror reads (${MAX_GD_ENTRIES})`);
  const grainOffsetSectors = u64(view, H_GRAIN_OFFSET, 'grain_offset');
  if (Math.ceil(fileSize / SECTOR_BYTES) < grainOffsetSectors) {
    throw new FormatError(`File truncated, expecting at least ${grainOffsetSectors * SECTOR_BYTES} bytes (vmdk header field grain_offset)`, 'grain_offset');
  }
  const gdBytes = gdEntries * GTE_BYTES;
  const place = (field: string, sectors: number): number => {
    const at = sectors * SECTOR_BYTES;
    if (!Number.isSafeInteger(at) || at < HEADER_BYTES || at + gdBytes > fileSize) {
      fail(field, `is sector ${sectors}: a grain directory of ${gdEntries} entries there does not fit in the file (${fileSize} bytes)`);
    }
    return at;
  };
  const gdOffset = place('gd_offset', u64(view, H_GD_OFFSET, 'gd_offset'));
  const rgdOffset = flags & FLAG_RGD ? place('rgd_offset', u64(view, H_RGD_OFFSET, 'rgd_offset')) : 0;
  return {
    version,
    flags,
    capacitySectors,
    grainSectors,
    descOffsetSectors: u64(view, H_DESC_OFFSET, 'desc_offset'),
    descSizeSectors: u64(view, H_DESC_SIZE, 'desc_size'),
    gtesPerGt,
    rgdOffset,
    gdOffset,
    grainOffsetSectors,
    compressed,
    hasMarker: (flags & FLAG_MARKER) !== 0,
    hasZeroGrain: (flags & FLAG_ZERO_GRAIN) !== 0,
    gdEntries,
    gdAtEnd,
  };
}

/** Where qemu-img create puts things in a new sparse extent of `capacitySectors`. */
export interface NewLayout {
  gdSectors: number;
  gtSectors: number;
  gtCount: number;
  rgdOffsetSectors: number;
  gdOffsetSectors: number;
  grainOffsetSectors: number;
}

export function newLayout(capacitySectors: number, grainSectors: number, gtesPerGt: number): NewLayout {
  const grains = Math.ceil(capacitySectors / grainSectors);
  const gtSectors = Math.ceil((gtesPerGt * GTE_BYTES) / SECTOR_BYTES);
  const gtCount = Math.ceil(grains / gtesPerGt);
  const gdSectors = Math.ceil((gtCount * GTE_BYTES) / SECTOR_BYTES);
  const descOffset = 1;
  const descSize = 20;
  const rgdOffsetSectors = descOffset + descSize;
  const gdOffsetSectors = rgdOffsetSectors + gdSectors + gtSectors * gtCount;
  const grainOffsetSectors = Math.ceil((gdOffsetSectors + gdSectors + gtSectors * gtCount) / grainSectors) * grainSectors;
  return { gdSectors, gtSectors, gtCount, rgdOffsetSectors, gdOffsetSectors, grainOffsetSectors };
}

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/** The header qemu-img create writes (version 1, or 3 compressed with markers), RGD and GD as `layout` places them. */
export function buildSparseHeader(capacitySectors: number, layout: NewLayout, compress: boolean, grainSectors: number, gtesPerGt: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(H_MAGIC, VMDK4_MAGIC, false);
  view.setUint32(H_VERSION, compress ? 3 : 1, true);
  view.setUint32(H_FLAGS, FLAG_RGD | FLAG_NL_DETECT | (compress ? FLAG_COMPRESS | FLAG_MARKER : 0), true);
  setU64(view, H_CAPACITY, capacitySectors);
  setU64(view, H_GRANULARITY, grainSectors);
  setU64(view, H_DESC_OFFSET, 1);
  setU64(view, H_DESC_SIZE, 20);
  view.setUint32(H_NUM_GTES_PER_GT, gtesPerGt, true);
  setU64(view, H_RGD_OFFSET, layout.rgdOffsetSectors);
  setU64(view, H_GD_OFFSET, layout.gdOffsetSectors);
  setU64(view, H_GRAIN_OFFSET, layout.grainOffsetSectors);
  out.set([0x0a, 0x20, 0x0d, 0x0a], H_CHECK_BYTES);
  view.setUint16(H_COMPRESS_ALGORITHM, compress ? COMPRESSION_DEFLATE : 0, true);
  return out;
}
