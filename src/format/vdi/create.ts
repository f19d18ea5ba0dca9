/**
 * A new VDI, as qemu-img create -f vdi makes it: the header, the block map
 * right after it (whole sectors), the data area after the map; dynamic
 * (every entry unallocated) or static (every block allocated in order,
 * the file as long as all of them).
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { BLOCK_BYTES, BMAP_ENTRY_BYTES, BMAP_UNALLOCATED, HEADER_BYTES, MAX_DISK_BYTES, SECTOR_BYTES, TYPE_DYNAMIC, TYPE_STATIC } from './constants.js';
import { buildHeader } from './header.js';

export interface VdiCreateOptions {
  size: number;
  /** Every block allocated up front. */
  static?: boolean;
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

export async function createVdi(file: BlockDevice, options: VdiCreateOptions): Promise<void> {
  const diskSize = Math.ceil(options.size / SECTOR_BYTES) * SECTOR_BYTES;
  if (diskSize > MAX_DISK_BYTES) throw new FormatError(`Unsupported VDI image size ${diskSize}: the largest is ${MAX_DISK_BYTES}`, 'size');
  const isStatic = options.static === true;
  const blocks = Math.ceil(diskSize / BLOCK_BYTES);
  const bmapBytes = Math.ceil((blocks * BMAP_ENTRY_BYTES) / SECTOR_BYTES) * SECTOR_BYTES;
  const offsetData = HEADER_BYTES + bmapBytes;
  const header = buildHeader({ diskSize, blocks, offsetData, imageType: isStatic ? TYPE_STATIC : TYPE_DYNAMIC, uuidImage: randomBytes(16), uuidLastSnap: randomBytes(16) });
  const bmap = new Uint8Array(bmapBytes);
  const view = new DataView(bmap.buffer);
  for (let i = 0; i < blocks; i++) view.setUint32(i * BMAP_ENTRY_BYTES, isStatic ? i : BMAP_UNALLOCATED, true);
  if (!file.resize) throw new BlockError('ENOTSUP', 'resize', 0, 0, 'the device cannot be resized');
  await file.resize(0);
  await file.write(0, header);
  if (bmapBytes > 0) await file.write(HEADER_BYTES, bmap);
  if (isStatic) await file.resize(offsetData + blocks * BLOCK_BYTES);
  await file.flush();
}
