/**
 * A new VMDK, as qemu-img create -f vmdk makes it: one sparse extent in the
 * file (monolithicSparse, or streamOptimized: version 3, compressed grains
 * behind markers), 64 KiB grains, 512 entries a grain table, the header,
 * the descriptor at sector 1 (20 sectors), the redundant grain directory
 * and its tables, then the grain directory and its tables (every table
 * there from the start), grains from a 64 KiB boundary.
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { EMBEDDED_DESC_OFFSET, GTE_BYTES, MAX_EXTENT_SECTORS, NEW_GRAIN_SECTORS, NEW_GTES_PER_GT, SECTOR_BYTES, VMDK_ADAPTER_TYPES, VMDK_SUBFORMATS, type VmdkAdapterType, type VmdkSubformat } from './constants.js';
import { buildDescriptor } from './descriptor.js';
import { buildSparseHeader, newLayout } from './header.js';

export interface VmdkCreateOptions {
  size: number;
  subformat?: VmdkSubformat;
  adapterType?: VmdkAdapterType;
  /** The name the descriptor gives the extent (the file's own name). */
  fileName?: string;
}

function randomU32(): number {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!;
}

export async function createVmdk(file: BlockDevice, options: VmdkCreateOptions): Promise<void> {
  const subformat = options.subformat ?? 'monolithicSparse';
  if (!VMDK_SUBFORMATS.includes(subformat)) throw new FormatError(`Invalid vmdk subformat '${String(subformat)}' (diskmirror writes ${VMDK_SUBFORMATS.join(' or ')})`, 'subformat');
  const adapterType = options.adapterType ?? 'ide';
  if (!VMDK_ADAPTER_TYPES.includes(adapterType)) throw new FormatError(`Invalid adapter type '${String(adapterType)}' (expected ${VMDK_ADAPTER_TYPES.join(', ')})`, 'adapter_type');
  const sectors = Math.ceil(options.size / SECTOR_BYTES);
  if (sectors > MAX_EXTENT_SECTORS) throw new FormatError(`Unsupported vmdk image size ${options.size}: one extent holds at most ${MAX_EXTENT_SECTORS * SECTOR_BYTES} bytes`, 'size');
  const compress = subformat === 'streamOptimized';
  const layout = newLayout(sectors, NEW_GRAIN_SECTORS, NEW_GTES_PER_GT);
  const header = buildSparseHeader(sectors, layout, compress, NEW_GRAIN_SECTORS, NEW_GTES_PER_GT);
  const descriptor = buildDescriptor({ cid: randomU32(), createType: subformat, sectors, extentName: baseName(options.fileName ?? 'image.vmdk'), adapterType });
  const directory = (firstTableSector: number): Uint8Array => {
    const gd = new Uint8Array(layout.gdSectors * SECTOR_BYTES);
    const view = new DataView(gd.buffer);
    for (let i = 0; i < layout.gtCount; i++) view.setUint32(i * GTE_BYTES, firstTableSector + i * layout.gtSectors, true);
    return gd;
  };
  if (!file.resize) throw new BlockError('ENOTSUP', 'resize', 0, 0, 'the device cannot be resized');
  await file.resize(0);
  await file.write(0, header);
  await file.write(EMBEDDED_DESC_OFFSET, new TextEncoder().encode(descriptor));
  await file.resize(layout.grainOffsetSectors * SECTOR_BYTES);
  await file.write(layout.rgdOffsetSectors * SECTOR_BYTES, directory(layout.rgdOffsetSectors + layout.gdSectors));
  await file.write(layout.gdOffsetSectors * SECTOR_BYTES, directory(layout.gdOffsetSectors + layout.gdSectors));
  await file.flush();
}

function baseName(name: string): string {
  return name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
}
