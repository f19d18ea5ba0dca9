/**
 * The VHDX metadata region: its table of items and the five items every
 * image has (file parameters, virtual disk size, page 83 data, logical and
 * physical sector size), checked as qemu-img checks them (a differencing
 * image, with has_parent, is refused as qemu-img 7.2 refuses it), and the
 * region of a new image.
 */
import { FormatError } from '../image-format.js';
import {
  BLOCK_SIZE_MAX,
  BLOCK_SIZE_MIN,
  FILE_PARAMETERS_GUID,
  LOGICAL_SECTOR_BYTES,
  LOGICAL_SECTOR_GUID,
  MAX_IMAGE_BYTES,
  MAX_SECTORS_PER_BLOCK,
  META_IS_REQUIRED,
  META_IS_VIRTUAL_DISK,
  METADATA_SIGNATURE,
  METADATA_TABLE_BYTES,
  MT_ENTRY_BYTES,
  MT_ENTRY_COUNT,
  MT_HEADER_BYTES,
  MT_MAX_ENTRIES,
  MTE_DATA_BITS,
  MTE_LENGTH,
  MTE_OFFSET,
  PAGE83_GUID,
  PARAMS_HAS_PARENT,
  PARAMS_LEAVE_BLOCKS_ALLOCATED,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_GUID,
  VIRTUAL_DISK_SIZE_GUID,
} from './constants.js';
import { type Region, ascii, guidText, putGuid, setU64, u64 } from './header.js';

export interface VhdxMetadata {
  blockBytes: number;
  leaveBlocksAllocated: boolean;
  /** As stored; the disk is its whole sectors. */
  virtualDiskSize: number;
  logicalSectorBytes: number;
  physicalSectorBytes: number;
  page83: string;
  /** Payload blocks per sector bitmap block: 2^23 sectors' worth. */
  chunkRatio: number;
}

const ITEMS = {
  [FILE_PARAMETERS_GUID]: { name: 'file parameters', bytes: 8 },
  [VIRTUAL_DISK_SIZE_GUID]: { name: 'virtual disk size', bytes: 8 },
  [PAGE83_GUID]: { name: 'page 83 data', bytes: 16 },
  [LOGICAL_SECTOR_GUID]: { name: 'logical sector size', bytes: 4 },
  [PHYSICAL_SECTOR_GUID]: { name: 'physical sector size', bytes: 4 },
  [PARENT_LOCATOR_GUID]: { name: 'parent locator', bytes: 0 },
} as const;
type ItemGuid = keyof typeof ITEMS;

/**
 * Reads the metadata items. `table` is the region's first 64 KiB; `read`
 * reads `bytes` at an offset in the region (the caller bounds it by the file).
 */
export async function parseMetadata(table: Uint8Array, region: Region, read: (offset: number, bytes: number) => Promise<Uint8Array>): Promise<VhdxMetadata> {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  if (ascii(table, 0, 8) !== METADATA_SIGNATURE) throw new FormatError('vhdx metadata region has no "metadata" signature', 'metadata');
  const count = view.getUint16(MT_ENTRY_COUNT, true);
  if (count > MT_MAX_ENTRIES) throw new FormatError(`vhdx metadata table field entry_count is ${count} (at most ${MT_MAX_ENTRIES})`, 'entry_count');
  const found = new Map<ItemGuid, { offset: number; bytes: number }>();
  for (let i = 0; i < count; i++) {
    const at = MT_HEADER_BYTES + i * MT_ENTRY_BYTES;
    const guid = guidText(table, at);
    const offset = view.getUint32(at + MTE_OFFSET, true);
    const bytes = view.getUint32(at + MTE_LENGTH, true);
    if (guid in ITEMS) {
      const item = ITEMS[guid as ItemGuid];
      if (found.has(guid as ItemGuid)) throw new FormatError(`vhdx metadata table has two ${item.name} items`, 'metadata');
      if (offset + Math.max(bytes, item.bytes) > region.bytes || bytes < item.bytes) {
        throw new FormatError(`vhdx metadata item ${item.name} at ${offset} (${bytes} bytes) is not inside the metadata region of ${region.bytes} bytes, or too short`, 'metadata');
      }
      found.set(guid as ItemGuid, { offset, bytes });
      continue;
    }
    if (view.getUint32(at + MTE_DATA_BITS, true) & META_IS_REQUIRED) throw new FormatError(`vhdx metadata item ${guid} is required and diskmirror does not know it`, 'metadata');
  }
  const item = async (guid: ItemGuid): Promise<DataView> => {
    const place = found.get(guid);
    if (!place) throw new FormatError(`vhdx metadata has no ${ITEMS[guid].name} item`, 'metadata');
    const bytes = await read(place.offset, ITEMS[guid].bytes);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
  const params = await item(FILE_PARAMETERS_GUID);
  const blockBytes = params.getUint32(0, true);
  const bits = params.getUint32(4, true);
  if (bits & PARAMS_HAS_PARENT) {
    if (found.has(PARENT_LOCATOR_GUID)) throw new FormatError('vhdx image is a differencing image (has_parent): diskmirror, like qemu-img 7.2, does not read those', 'has_parent');
    throw new FormatError('vhdx file parameters say has_parent, and there is no parent locator', 'has_parent');
  }
  const sizeView = await item(VIRTUAL_DISK_SIZE_GUID);
  const virtualDiskSize = u64(sizeView, 0, 'metadata', 'virtual_disk_size');
  const logicalSectorBytes = (await item(LOGICAL_SECTOR_GUID)).getUint32(0, true);
  const physicalSectorBytes = (await item(PHYSICAL_SECTOR_GUID)).getUint32(0, true);
  const page83 = await item(PAGE83_GUID);
  if (blockBytes < BLOCK_SIZE_MIN || blockBytes > BLOCK_SIZE_MAX || (blockBytes & (blockBytes - 1)) !== 0) {
    throw new FormatError(`vhdx file parameters field block_size is ${blockBytes} (expected a power of two from 1 to 256 MiB)`, 'block_size');
  }
  if (logicalSectorBytes !== LOGICAL_SECTOR_BYTES) throw new FormatError(`vhdx logical_sector_size is ${logicalSectorBytes} (qemu-img and diskmirror read 512 only)`, 'logical_sector_size');
  if (virtualDiskSize > MAX_IMAGE_BYTES) throw new FormatError(`vhdx virtual_disk_size is ${virtualDiskSize} (at most 64 TiB)`, 'virtual_disk_size');
  return {
    blockBytes,
    leaveBlocksAllocated: (bits & PARAMS_LEAVE_BLOCKS_ALLOCATED) !== 0,
    virtualDiskSize,
    logicalSectorBytes,
    physicalSectorBytes,
    page83: guidText(new Uint8Array(page83.buffer, page83.byteOffset, 16)),
    chunkRatio: (MAX_SECTORS_PER_BLOCK * logicalSectorBytes) / blockBytes,
  };
}

/** The metadata region of a new image, as qemu-img writes it: the table, then the five items at 64 KiB. */
export function buildMetadata(options: { virtualSize: number; blockBytes: number; fixed: boolean; page83: Uint8Array }): { table: Uint8Array; items: Uint8Array } {
  const table = new Uint8Array(METADATA_TABLE_BYTES);
  const view = new DataView(table.buffer);
  table.set(Array.from(METADATA_SIGNATURE, (c) => c.charCodeAt(0)), 0);
  const items = new Uint8Array(8 + 8 + 16 + 4 + 4);
  const iv = new DataView(items.buffer);
  iv.setUint32(0, options.blockBytes, true);
  iv.setUint32(4, options.fixed ? PARAMS_LEAVE_BLOCKS_ALLOCATED : 0, true);
  setU64(iv, 8, options.virtualSize);
  items.set(options.page83, 16);
  iv.setUint32(32, LOGICAL_SECTOR_BYTES, true);
  iv.setUint32(36, LOGICAL_SECTOR_BYTES, true);
  const entries: [string, number, number][] = [
    [FILE_PARAMETERS_GUID, 8, META_IS_REQUIRED],
    [VIRTUAL_DISK_SIZE_GUID, 8, META_IS_REQUIRED | META_IS_VIRTUAL_DISK],
    [PAGE83_GUID, 16, META_IS_REQUIRED | META_IS_VIRTUAL_DISK],
    [LOGICAL_SECTOR_GUID, 4, META_IS_REQUIRED | META_IS_VIRTUAL_DISK],
    [PHYSICAL_SECTOR_GUID, 4, META_IS_REQUIRED | META_IS_VIRTUAL_DISK],
  ];
  view.setUint16(MT_ENTRY_COUNT, entries.length, true);
  let offset = METADATA_TABLE_BYTES;
  entries.forEach(([guid, bytes, bits], i) => {
    const at = MT_HEADER_BYTES + i * MT_ENTRY_BYTES;
    putGuid(table, at, guid);
    view.setUint32(at + MTE_OFFSET, offset, true);
    view.setUint32(at + MTE_LENGTH, bytes, true);
    view.setUint32(at + MTE_DATA_BITS, bits, true);
    offset += bytes;
  });
  return { table, items };
}
