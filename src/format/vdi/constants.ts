/**
 * VDI, VirtualBox's image format, as QEMU's block/vdi.c reads it. Every
 * field is little-endian. A 512-byte header (a text line, the signature
 * 0xbeda107f at 0x40, the geometry, the sizes, four UUIDs) names a block
 * map: one 32-bit entry per block of the disk, the index of the block in
 * the data area (at offset_data, blocks of block_size one after the
 * other), or 0xffffffff (never allocated) or 0xfffffffe (discarded), both
 * reading as zeroes. A static image has every block allocated in order.
 */

export const SECTOR_BYTES = 512;
export const HEADER_BYTES = 512;
export const SIGNATURE = 0xbeda107f;
/** Version 1.1, the one qemu-img reads and writes. */
export const VERSION_1_1 = 0x00010001;
export const TYPE_DYNAMIC = 1;
export const TYPE_STATIC = 2;
/** The only block size qemu-img opens. */
export const BLOCK_BYTES = 1 << 20;
/** The text line of images qemu-img makes. */
export const QEMU_TEXT = '<<< QEMU VM Virtual Disk Image >>>\n';
/** Header length of version 1.1, as qemu-img writes it. */
export const HEADER_SIZE_V1_1 = 0x180;

export const BMAP_UNALLOCATED = 0xffffffff;
export const BMAP_DISCARDED = 0xfffffffe;
export const BMAP_ENTRY_BYTES = 4;

/** qemu-img's limits: at most 0x3fffffff blocks of 1 MiB. */
export const MAX_BLOCKS_QEMU = 0x3fffffff;
export const MAX_DISK_BYTES = MAX_BLOCKS_QEMU * BLOCK_BYTES;
/** Largest block map read (entries): 256 MiB of map, a 64 TiB disk. */
export const MAX_BMAP_ENTRIES = 1 << 26;

/** Header fields (byte offsets). */
export const H_TEXT = 0x00;
export const H_SIGNATURE = 0x40;
export const H_VERSION = 0x44;
export const H_HEADER_SIZE = 0x48;
export const H_IMAGE_TYPE = 0x4c;
export const H_IMAGE_FLAGS = 0x50;
export const H_DESCRIPTION = 0x54;
export const H_OFFSET_BMAP = 0x154;
export const H_OFFSET_DATA = 0x158;
export const H_CYLINDERS = 0x15c;
export const H_HEADS = 0x160;
export const H_SECTORS = 0x164;
export const H_SECTOR_SIZE = 0x168;
export const H_DISK_SIZE = 0x170;
export const H_BLOCK_SIZE = 0x178;
export const H_BLOCK_EXTRA = 0x17c;
export const H_BLOCKS_IN_IMAGE = 0x180;
export const H_BLOCKS_ALLOCATED = 0x184;
export const H_UUID_IMAGE = 0x188;
export const H_UUID_LAST_SNAP = 0x198;
export const H_UUID_LINK = 0x1a8;
export const H_UUID_PARENT = 0x1b8;
