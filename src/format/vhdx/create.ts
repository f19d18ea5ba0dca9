/**
 * A new VHDX, laid out as qemu-img create -f vhdx lays it out: the file
 * identifier, two headers (a random sequence number and one more), the
 * log at 1 MiB (log_size, 1 MiB by default, empty: its GUID is zero), the
 * BAT on the next MiB, the metadata region (1 MiB) after it, and the data
 * 5 MiB past the BAT's end. Dynamic: every payload block in the ZERO state
 * (qemu-img's block_state_zero default). Fixed: every block present, in
 * order, and the file as long as the disk, as the specification means a
 * fixed image (qemu-img's default block_state_zero marks a fixed image's
 * blocks ZERO too, so that its writes allocate new blocks past the ones
 * made for them: its converted fixed images grow; these are written in
 * place).
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { batEntries, batIndex } from './bat.js';
import {
  BAT_ENTRY_BYTES,
  BLOCK_SIZE_MAX,
  CREATOR_OFFSET,
  DEFAULT_LOG_BYTES,
  FILE_SIGNATURE,
  GiB,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_END,
  LOGICAL_SECTOR_BYTES,
  MAX_IMAGE_BYTES,
  MAX_SECTORS_PER_BLOCK,
  MiB,
  PAYLOAD_FULLY_PRESENT,
  PAYLOAD_ZERO,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  TiB,
} from './constants.js';
import { buildHeader, buildRegionTable, randomGuid } from './header.js';
import { buildMetadata } from './metadata.js';

export type VhdxSubformat = 'dynamic' | 'fixed';

export interface VhdxCreateOptions {
  size: number;
  subformat?: VhdxSubformat;
  /** Bytes; rounded up to 1 MiB, 0 or absent: chosen from the size as qemu-img chooses it; at most 256 MiB. */
  blockSize?: number;
  /** Bytes; rounded up to 1 MiB, at least 1 MiB. */
  logSize?: number;
}

const roundUp = (bytes: number, unit: number) => Math.ceil(bytes / unit) * unit;

/** The block size qemu-img picks for a disk of `bytes` when none is given. */
export function defaultBlockBytes(bytes: number): number {
  if (bytes > 32 * TiB) return 64 * MiB;
  if (bytes > 100 * GiB) return 32 * MiB;
  if (bytes > GiB) return 16 * MiB;
  return 8 * MiB;
}

/** The block and log sizes qemu-img makes of the options (rounded, defaulted, checked with its messages). */
export function vhdxCreateSizes(options: VhdxCreateOptions): { virtualSize: number; blockBytes: number; logBytes: number } {
  const virtualSize = roundUp(options.size, LOGICAL_SECTOR_BYTES);
  if (virtualSize > MAX_IMAGE_BYTES) throw new FormatError('Image size too large; max of 64TB', 'size');
  const logBytes = options.logSize === undefined ? DEFAULT_LOG_BYTES : roundUp(options.logSize, MiB);
  if (logBytes < MiB) throw new FormatError('Log size must be a multiple of 1 MB', 'log_size');
  if (logBytes > 0xffffffff) throw new FormatError('Log size must be smaller than 4 GB', 'log_size');
  let blockBytes = options.blockSize ? Math.min(roundUp(options.blockSize, MiB), BLOCK_SIZE_MAX) : defaultBlockBytes(virtualSize);
  if ((blockBytes & (blockBytes - 1)) !== 0) throw new FormatError('Block size must be a power of two', 'block_size');
  return { virtualSize, blockBytes, logBytes };
}

export async function createVhdx(file: BlockDevice, options: VhdxCreateOptions): Promise<void> {
  const subformat = options.subformat ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new FormatError(`Invalid vhdx subformat '${String(subformat)}' (expected dynamic or fixed)`, 'subformat');
  const { virtualSize, blockBytes, logBytes } = vhdxCreateSizes(options);
  const fixed = subformat === 'fixed';
  const chunkRatio = (MAX_SECTORS_PER_BLOCK * LOGICAL_SECTOR_BYTES) / blockBytes;
  const blocks = Math.ceil(virtualSize / blockBytes);
  const bat = { offset: roundUp(HEADER_SECTION_END + logBytes, MiB), bytes: roundUp(batEntries(blocks, chunkRatio) * BAT_ENTRY_BYTES, MiB) };
  const metadata = { offset: roundUp(bat.offset + bat.bytes, MiB), bytes: MiB };
  const dataOffset = bat.offset + bat.bytes + 5 * MiB;
  if (!file.resize) throw new BlockError('ENOTSUP', 'resize', 0, 0, 'the device cannot be resized');
  await file.resize(0);
  await file.resize(fixed ? dataOffset + virtualSize : dataOffset);

  const identifier = new Uint8Array(CREATOR_OFFSET + 2 * 'diskmirror'.length);
  identifier.set(Array.from(FILE_SIGNATURE, (c) => c.charCodeAt(0)), 0);
  Array.from('diskmirror').forEach((c, i) => (identifier[CREATOR_OFFSET + 2 * i] = c.charCodeAt(0)));
  await file.write(0, identifier);

  const sequence = BigInt(globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!);
  const fields = { fileWriteGuid: randomGuid(), dataWriteGuid: randomGuid(), logGuid: new Uint8Array(16), logLength: logBytes, logOffset: HEADER_SECTION_END };
  await file.write(HEADER1_OFFSET, buildHeader(null, { ...fields, sequence }));
  await file.write(HEADER2_OFFSET, buildHeader(null, { ...fields, sequence: sequence + 1n }));

  if (blocks > 0) {
    const table = new Uint8Array((batIndex(blocks - 1, chunkRatio) + 1) * BAT_ENTRY_BYTES);
    const view = new DataView(table.buffer);
    for (let block = 0; block < blocks; block++) {
      const at = batIndex(block, chunkRatio) * BAT_ENTRY_BYTES;
      if (!fixed) {
        view.setUint32(at, PAYLOAD_ZERO, true);
        continue;
      }
      const mib = (dataOffset + block * blockBytes) / MiB;
      view.setUint32(at, ((mib % 4096) * 2 ** 20 + PAYLOAD_FULLY_PRESENT) >>> 0, true);
      view.setUint32(at + 4, Math.floor(mib / 4096), true);
    }
    await file.write(bat.offset, table);
  }
  const regionTable = buildRegionTable(bat, metadata);
  await file.write(REGION_TABLE1_OFFSET, regionTable);
  await file.write(REGION_TABLE2_OFFSET, regionTable);
  const { table, items } = buildMetadata({ virtualSize, blockBytes, fixed, page83: randomGuid() });
  await file.write(metadata.offset, table);
  await file.write(metadata.offset + table.length, items);
  await file.flush();
}
