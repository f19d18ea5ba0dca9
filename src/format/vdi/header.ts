/**
 * The VDI header: every field qemu-img checks, checked the same way (a
 * FormatError naming the field), plus the bounds that keep a hostile
 * header from making diskmirror read or allocate without limit; and the
 * header of a new image.
 */
import { FormatError } from '../image-format.js';
import {
  BLOCK_BYTES,
  BMAP_ENTRY_BYTES,
  H_BLOCK_SIZE,
  H_BLOCKS_ALLOCATED,
  H_BLOCKS_IN_IMAGE,
  H_DISK_SIZE,
  H_HEADER_SIZE,
  H_IMAGE_TYPE,
  H_OFFSET_BMAP,
  H_OFFSET_DATA,
  H_SECTOR_SIZE,
  H_SIGNATURE,
  H_TEXT,
  H_UUID_IMAGE,
  H_UUID_LAST_SNAP,
  H_UUID_LINK,
  H_UUID_PARENT,
  H_VERSION,
  HEADER_BYTES,
  HEADER_SIZE_V1_1,
  MAX_BLOCKS_QEMU,
  MAX_BMAP_ENTRIES,
  MAX_DISK_BYTES,
  QEMU_TEXT,
  SECTOR_BYTES,
  SIGNATURE,
  TYPE_DYNAMIC,
  TYPE_STATIC,
  VERSION_1_1,
} from './constants.js';

export interface VdiHeader {
  imageType: typeof TYPE_DYNAMIC | typeof TYPE_STATIC;
  offsetBmap: number;
  offsetData: number;
  /** The disk's bytes, rounded up to whole sectors as qemu-img rounds them. */
  diskSize: number;
  blockBytes: number;
  blocksInImage: number;
  blocksAllocated: number;
  uuidImage: string;
  uuidLastSnap: string;
}

/** A UUID as VirtualBox stores it (the first three groups little-endian), in its usual spelling. */
export function uuidText(bytes: Uint8Array): string {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const hex = order.map((i) => bytes[i]!.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function isNull(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

export function hasVdiSignature(head: Uint8Array): boolean {
  return head.length >= HEADER_BYTES && new DataView(head.buffer, head.byteOffset, head.length).getUint32(H_SIGNATURE, true) === SIGNATURE;
}

/** Parses and checks the header (its first 512 bytes) of a file of `fileSize` bytes. */
export function parseHeader(bytes: Uint8Array, fileSize: number): VdiHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const u32 = (at: number) => view.getUint32(at, true);
  const fail = (field: string, text: string): never => {
    throw new FormatError(`vdi header field ${field} ${text}`, field);
  };
  const signature = u32(H_SIGNATURE);
  if (signature !== SIGNATURE) fail('signature', `is 0x${signature.toString(16)} (expected 0xbeda107f): not a VDI image`);
  const version = u32(H_VERSION);
  if (version !== VERSION_1_1) fail('version', `is ${version >>> 16}.${version & 0xffff}: only 1.1 is supported`);
  const imageType = u32(H_IMAGE_TYPE);
  if (imageType !== TYPE_DYNAMIC && imageType !== TYPE_STATIC) fail('image_type', `is ${imageType} (expected 1, dynamic, or 2, static)`);
  const hi = view.getUint32(H_DISK_SIZE + 4, true);
  const lo = u32(H_DISK_SIZE);
  const rawDiskSize = hi * 2 ** 32 + lo;
  if (hi >= 2 ** 21 || rawDiskSize > MAX_DISK_BYTES) fail('disk_size', `is ${BigInt(hi) * 2n ** 32n + BigInt(lo)}: more than the largest VDI qemu-img opens, ${MAX_DISK_BYTES}`);
  // VBoxManage convertfromraw writes sizes that are not whole sectors: qemu-img rounds them up.
  const diskSize = Math.ceil(rawDiskSize / SECTOR_BYTES) * SECTOR_BYTES;
  const offsetBmap = u32(H_OFFSET_BMAP);
  if (offsetBmap % SECTOR_BYTES !== 0 || offsetBmap < HEADER_BYTES) fail('offset_bmap', `is 0x${offsetBmap.toString(16)} (expected a whole sector past the header)`);
  const offsetData = u32(H_OFFSET_DATA);
  if (offsetData % SECTOR_BYTES !== 0) fail('offset_data', `is 0x${offsetData.toString(16)} (expected a whole sector)`);
  const sectorSize = u32(H_SECTOR_SIZE);
  if (sectorSize !== SECTOR_BYTES) fail('sector_size', `is ${sectorSize} (expected 512)`);
  const blockBytes = u32(H_BLOCK_SIZE);
  if (blockBytes !== BLOCK_BYTES) fail('block_size', `is ${blockBytes} (expected 1048576, the only size qemu-img opens)`);
  const blocksInImage = u32(H_BLOCKS_IN_IMAGE);
  if (blocksInImage > MAX_BLOCKS_QEMU) fail('blocks_in_image', `is ${blocksInImage}: more than ${MAX_BLOCKS_QEMU}`);
  if (diskSize > blocksInImage * blockBytes) fail('disk_size', `is ${diskSize}: the block map has room for ${blocksInImage * blockBytes} bytes (field blocks_in_image ${blocksInImage})`);
  if (blocksInImage > MAX_BMAP_ENTRIES) fail('blocks_in_image', `is ${blocksInImage}: more than diskmirror reads, ${MAX_BMAP_ENTRIES}`);
  const bmapEnd = offsetBmap + blocksInImage * BMAP_ENTRY_BYTES;
  if (bmapEnd > fileSize) fail('offset_bmap', `is 0x${offsetBmap.toString(16)}: a block map of ${blocksInImage} entries there ends past the file (${fileSize} bytes)`);
  if (offsetData < bmapEnd) fail('offset_data', `is 0x${offsetData.toString(16)}: inside the block map (0x${offsetBmap.toString(16)} to 0x${bmapEnd.toString(16)})`);
  const blocksAllocated = u32(H_BLOCKS_ALLOCATED);
  if (blocksAllocated > blocksInImage) fail('blocks_allocated', `is ${blocksAllocated}: more than blocks_in_image, ${blocksInImage}`);
  if (!isNull(bytes.subarray(H_UUID_LINK, H_UUID_LINK + 16))) fail('uuid_link', 'is not null: differencing images are not supported');
  if (!isNull(bytes.subarray(H_UUID_PARENT, H_UUID_PARENT + 16))) fail('uuid_parent', 'is not null: differencing images are not supported');
  return {
    imageType: imageType as VdiHeader['imageType'],
    offsetBmap,
    offsetData,
    diskSize,
    blockBytes,
    blocksInImage,
    blocksAllocated,
    uuidImage: uuidText(bytes.subarray(H_UUID_IMAGE, H_UUID_IMAGE + 16)),
    uuidLastSnap: uuidText(bytes.subarray(H_UUID_LAST_SNAP, H_UUID_LAST_SNAP + 16)),
  };
}

/** The header of a new image (static: every block allocated). */
export function buildHeader(o: { diskSize: number; blocks: number; offsetData: number; imageType: number; uuidImage: Uint8Array; uuidLastSnap: Uint8Array }): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  const view = new DataView(out.buffer);
  out.set(Array.from(QEMU_TEXT, (c) => c.charCodeAt(0)), H_TEXT);
  view.setUint32(H_SIGNATURE, SIGNATURE, true);
  view.setUint32(H_VERSION, VERSION_1_1, true);
  view.setUint32(H_HEADER_SIZE, HEADER_SIZE_V1_1, true);
  view.setUint32(H_IMAGE_TYPE, o.imageType, true);
  view.setUint32(H_OFFSET_BMAP, HEADER_BYTES, true);
  view.setUint32(H_OFFSET_DATA, o.offsetData, true);
  view.setUint32(H_SECTOR_SIZE, SECTOR_BYTES, true);
  view.setUint32(H_DISK_SIZE, o.diskSize >>> 0, true);
  view.setUint32(H_DISK_SIZE + 4, Math.floor(o.diskSize / 2 ** 32), true);
  view.setUint32(H_BLOCK_SIZE, BLOCK_BYTES, true);
  view.setUint32(H_BLOCKS_IN_IMAGE, o.blocks, true);
  view.setUint32(H_BLOCKS_ALLOCATED, o.imageType === TYPE_STATIC ? o.blocks : 0, true);
  out.set(o.uuidImage.subarray(0, 16), H_UUID_IMAGE);
  out.set(o.uuidLastSnap.subarray(0, 16), H_UUID_LAST_SNAP);
  return out;
}
