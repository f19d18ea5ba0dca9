/**
 * A new VHD, as qemu-img create -f vpc makes it: the size rounded up to a
 * CHS geometry (or kept, with force_size, and the creator "qem2" so that
 * readers use it); dynamic: footer copy, dynamic header, an empty BAT of
 * 2 MiB blocks and the footer; fixed: the guest's bytes and the footer.
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { BAT_ENTRY_BYTES, DEFAULT_BLOCK_BYTES, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, FOOTER_BYTES, NEW_BAT_OFFSET, SECTOR_BYTES } from './constants.js';
import { buildDynamicHeader } from './bat.js';
import { buildFooter, roundedImageSize } from './footer.js';

export type VpcSubformat = 'dynamic' | 'fixed';

export interface VpcCreateOptions {
  size: number;
  subformat?: VpcSubformat;
  /** Keep the size as given (not rounded to a geometry): Virtual PC then sees another size. */
  forceSize?: boolean;
}

/** The virtual size qemu-img gives a new image asked for `bytes` (rounded to sectors, then to a geometry unless forced). */
export function vpcCreatedSize(bytes: number, forceSize = false): number {
  const sectors = Math.ceil(bytes / SECTOR_BYTES);
  if (forceSize) return roundedImageSize(sectors * SECTOR_BYTES, true).sectors * SECTOR_BYTES;
  return roundedImageSize(sectors * SECTOR_BYTES, false).sectors * SECTOR_BYTES;
}

export async function createVpc(file: BlockDevice, options: VpcCreateOptions): Promise<void> {
  const subformat = options.subformat ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new FormatError(`Invalid vpc subformat '${String(subformat)}' (expected dynamic or fixed)`, 'subformat');
  const forceSize = options.forceSize === true;
  const bytes = vpcCreatedSize(options.size, forceSize);
  const { geometry, sectors } = roundedImageSize(bytes, forceSize);
  const diskType = subformat === 'dynamic' ? DISK_TYPE_DYNAMIC : DISK_TYPE_FIXED;
  const footer = buildFooter({ diskType, bytes: sectors * SECTOR_BYTES, geometry, forceSize });
  if (!file.resize) throw new BlockError('ENOTSUP', 'resize', 0, 0, 'the device cannot be resized');
  await file.resize(0);
  if (diskType === DISK_TYPE_FIXED) {
    await file.resize(bytes + FOOTER_BYTES);
    await file.write(bytes, footer);
    await file.flush();
    return;
  }
  const entries = Math.ceil(bytes / DEFAULT_BLOCK_BYTES);
  const batBytes = Math.ceil((entries * BAT_ENTRY_BYTES) / SECTOR_BYTES) * SECTOR_BYTES;
  const bat = new Uint8Array(batBytes).fill(0xff);
  await file.write(0, footer);
  await file.write(FOOTER_BYTES, buildDynamicHeader(entries, DEFAULT_BLOCK_BYTES, NEW_BAT_OFFSET));
  await file.write(NEW_BAT_OFFSET, bat);
  await file.write(NEW_BAT_OFFSET + batBytes, footer);
  await file.flush();
}
