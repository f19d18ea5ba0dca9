/**
 * VHD (QEMU's `vpc`), as Microsoft's Virtual Hard Disk Image Format
 * Specification lays it out and QEMU's block/vpc.c reads it. Every field is
 * big-endian.
 *
 * A fixed image is the guest's bytes followed by a 512-byte footer. A
 * dynamic image starts with a copy of the footer, then a 1024-byte dynamic
 * disk header ("cxsparse") that locates the block allocation table (BAT):
 * one 32-bit entry per block, the sector of the block's bitmap in the file
 * or 0xffffffff. An allocated block is a sector bitmap (a bit per sector,
 * rounded up to whole sectors) followed by the block's data; the footer
 * follows the last block and moves on as blocks are added.
 */

export const SECTOR_BYTES = 512;
export const FOOTER_BYTES = 512;
export const DYNAMIC_HEADER_BYTES = 1024;

/** "conectix": the footer's cookie (and what qemu-img probes at offset 0). */
export const FOOTER_COOKIE = 'conectix';
/** "cxsparse": the dynamic disk header's cookie. */
export const DYNAMIC_COOKIE = 'cxsparse';

/** Footer fields (byte offsets). */
export const FT_COOKIE = 0;
export const FT_FEATURES = 8;
export const FT_VERSION = 12;
export const FT_DATA_OFFSET = 16;
export const FT_TIMESTAMP = 24;
export const FT_CREATOR_APP = 28;
export const FT_CREATOR_VERSION = 32;
export const FT_CREATOR_OS = 36;
export const FT_ORIGINAL_SIZE = 40;
export const FT_CURRENT_SIZE = 48;
export const FT_CYLINDERS = 56;
export const FT_HEADS = 58;
export const FT_SECTORS_PER_TRACK = 59;
export const FT_DISK_TYPE = 60;
export const FT_CHECKSUM = 64;
export const FT_UUID = 68;

/** Dynamic disk header fields (byte offsets). */
export const DH_COOKIE = 0;
export const DH_DATA_OFFSET = 8;
export const DH_TABLE_OFFSET = 16;
export const DH_VERSION = 24;
export const DH_MAX_TABLE_ENTRIES = 28;
export const DH_BLOCK_SIZE = 32;
export const DH_CHECKSUM = 36;

export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;

/** A BAT entry for a block with no place in the file. */
export const BAT_UNALLOCATED = 0xffffffff;
export const BAT_ENTRY_BYTES = 4;

/** The largest geometry: 65535 cylinders, 16 heads, 255 sectors per track. */
export const MAX_CYLINDERS = 65535;
export const MAX_HEADS = 16;
export const MAX_SECTORS_PER_TRACK = 255;
export const MAX_GEOMETRY_SECTORS = MAX_CYLINDERS * MAX_HEADS * MAX_SECTORS_PER_TRACK;
/** qemu-img refuses images over 2040 GiB (0xff000000 sectors). */
export const MAX_SECTORS = 0xff000000;

/** Block size qemu-img creates dynamic images with. */
export const DEFAULT_BLOCK_BYTES = 2 << 20;
/** BAT of a new image: right after the footer copy and the dynamic header. */
export const NEW_BAT_OFFSET = 3 * SECTOR_BYTES;

/** Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the footer's epoch. */
export const TIMESTAMP_BASE_SECONDS = 946684800;

/**
 * Creator applications whose images qemu-img 7.2 sizes by the footer's
 * current size rather than by the CHS geometry: Hyper-V, QEMU with
 * force_size, Disk2vhd, XenConverter, XenServer ("tap\0"). Every other
 * creator ("vpc ", "qemu", ...) is sized by the geometry, unless the
 * geometry is the largest there is. (QEMU 10 inverts the rule: only "vpc "
 * and "qemu" use the geometry, which changes the size of Azure's "wa\0\0"
 * images; diskmirror follows the qemu-img it is tested against.)
 */
export const CURRENT_SIZE_CREATORS: readonly string[] = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];
