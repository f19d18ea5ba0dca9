/**
 * An image format is a device on top of a device (as QEMU's format drivers
 * are): it reads and writes guest bytes, and also says where the data is,
 * so the mirror never reads holes.
 */
import type { BlockDevice } from '../block/block-device.js';

export type FormatName = 'raw' | 'qcow2' | 'vpc' | 'vdi' | 'vhdx' | 'vmdk';
export const FORMAT_NAMES: readonly FormatName[] = ['raw', 'qcow2', 'vpc', 'vdi', 'vhdx', 'vmdk'];

/** The format names as a message lists them: "raw, qcow2, vpc, vdi, vhdx or vmdk". */
export function formatNamesText(): string {
  return `${FORMAT_NAMES.slice(0, -1).join(', ')} or ${FORMAT_NAMES[FORMAT_NAMES.length - 1]}`;
}

/**
 * What a range holds: `data` (read it), `zero` (reads as zeroes, known from
 * metadata), `unallocated` (nothing anywhere in the chain: reads as zeroes).
 */
export type BlockStatusKind = 'data' | 'zero' | 'unallocated';

export interface BlockStatus {
  /** Guest offset where the extent starts (the offset asked for). */
  offset: number;
  /** Length of the extent: the same status holds for all of it. */
  bytes: number;
  kind: BlockStatusKind;
  /**
   * Where in the backing chain the answer came from: 0 this image, 1 its
   * backing image, and so on. For `unallocated`, the chain's length.
   */
  depth: number;
  /** For data stored as-is (not compressed), its offset in the file at `depth`. */
  hostOffset?: number;
}

export interface BlockStatusOptions {
  /**
   * Data extents also end where the data stops being stored contiguously in
   * the file (so `hostOffset` describes all of the extent), as `map` prints
   * them. Without it, data extents run on across host discontinuities.
   */
  contiguous?: boolean;
}

export interface ImageInfo {
  format: FormatName;
  virtualSize: number;
  /** Bytes the image takes in its file. */
  fileSize: number;
  clusterSize?: number;
  /** qcow2: '0.10' or '1.1'. */
  compat?: string;
  backingFile?: string;
  backingFormat?: FormatName;
  /** The backing image's info, and so on down the chain. */
  backing?: ImageInfo;
  /** Format-specific extras (refcount bits, features...). */
  details?: Record<string, unknown>;
}

export interface WriteZeroesOptions {
  /** The range may become a hole / zero cluster instead of written zeroes. */
  unmap: boolean;
}

export interface ImageFormat extends BlockDevice {
  readonly format: FormatName;
  /**
   * Status of the extent starting at `offset`, at most `bytes` long (clamped
   * to the image), resolved through the backing chain: `unallocated` only
   * when no image of the chain has the range, `depth` tells which image does.
   */
  blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus>;
  writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void>;
  info(): Promise<ImageInfo>;
  /**
   * Makes the range read from the backing image again (zeroes past its end,
   * or without one), dropping what this image holds there: QEMU's "full
   * discard". Formats without backing files leave it out. Unlike `discard`
   * (which may leave zeroes, as QEMU's discard does on a qcow2 overlay), the
   * result is exact.
   */
  deallocate?(offset: number, bytes: number): Promise<void>;
}

/** A format or image could not be opened or is corrupt (its class lives with the page's vocabulary: the page tells it apart). */
export { FormatError } from '../qapi/errors.js';

/** Shared zero buffer for writing zeroes in pieces. */
export const ZERO_BUFFER_BYTES = 1 << 20;
let zeroes: Uint8Array | undefined;
export function zeroBuffer(bytes: number): Uint8Array {
  zeroes ??= new Uint8Array(ZERO_BUFFER_BYTES);
  return zeroes.subarray(0, Math.min(bytes, ZERO_BUFFER_BYTES));
}
