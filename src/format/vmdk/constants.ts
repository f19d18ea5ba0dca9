/**
 * VMDK, VMware's disk format, as QEMU's block/vmdk.c reads and writes it.
 * Every field is little-endian. A hosted sparse extent ("KDMV") starts
 * with a 512-byte header: the disk's capacity and grain size in sectors,
 * where the text descriptor lies, the grain directory (GD) and its
 * redundant copy (RGD), each entry the sector of a grain table (GT) of
 * num_gtes_per_gt entries, each the sector of a grain (0: never written;
 * 1: reads as zeroes when the header's zero-grain flag is set). A
 * streamOptimized extent stores each grain deflated (zlib) behind a
 * marker (its LBA and the compressed size); when the header's GD offset is
 * GD_AT_END, the real header is in a footer before the end-of-stream marker.
 * A descriptor file (text, "# Disk DescriptorFile") names extent files:
 * FLAT (the bytes as they are, from a sector offset) or SPARSE (a KDMV file).
 */

export const SECTOR_BYTES = 512;
export const HEADER_BYTES = 512;
/** "KDMV" read as a big-endian u32, as QEMU compares it. */
export const VMDK4_MAGIC = 0x4b444d56;
/** "COWD": the older VMware ESX sparse format, not read. */
export const VMDK3_MAGIC = 0x434f5744;

export const FLAG_NL_DETECT = 1 << 0;
export const FLAG_RGD = 1 << 1;
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESS = 1 << 16;
export const FLAG_MARKER = 1 << 17;
export const COMPRESSION_DEFLATE = 1;

/** A grain table entry that reads as zeroes (with FLAG_ZERO_GRAIN). */
export const GTE_ZEROED = 1;
export const GTE_BYTES = 4;

/** Header fields (byte offsets from the start of the file, magic included). */
export const H_MAGIC = 0;
export const H_VERSION = 4;
export const H_FLAGS = 8;
export const H_CAPACITY = 12;
export const H_GRANULARITY = 20;
export const H_DESC_OFFSET = 28;
export const H_DESC_SIZE = 36;
export const H_NUM_GTES_PER_GT = 44;
export const H_RGD_OFFSET = 48;
export const H_GD_OFFSET = 56;
export const H_GRAIN_OFFSET = 64;
export const H_CHECK_BYTES = 73;
export const H_COMPRESS_ALGORITHM = 77;

/** Stream markers: {val u64, size u32, type u32}; a grain marker is {lba u64, size u32} then the data. */
export const MARKER_END_OF_STREAM = 0;
export const MARKER_GRAIN_TABLE = 1;
export const MARKER_GRAIN_DIRECTORY = 2;
export const MARKER_FOOTER = 3;
export const GRAIN_MARKER_BYTES = 12;
/** The footer (its marker, the header copy, the end-of-stream marker) ends the file. */
export const FOOTER_BYTES = 3 * SECTOR_BYTES;

/** QEMU's limits: at most 512 entries in a grain table, grains of at most 0x200000 sectors, 32 Mi GD entries. */
export const MAX_GTES_PER_GT = 512;
export const MAX_GRAIN_SECTORS_QEMU = 0x200000;
export const MAX_GD_ENTRIES_QEMU = 32 * 1024 * 1024;
/** diskmirror's: grains of at most 2 MiB (a compressed grain reads two), 16 Mi GD entries (64 MiB), 2^44 sectors. */
export const MAX_GRAIN_BYTES = 2 << 20;
export const MAX_GD_ENTRIES = 1 << 24;
export const MAX_CAPACITY_SECTORS = 2 ** 44;
/** A new extent's sectors can be at most 2^32 (QEMU's VMDK_EXTENT_MAX_SECTORS). */
export const MAX_EXTENT_SECTORS = 2 ** 32;

/** The descriptor QEMU reads: from 0x200 in a sparse file, 20 sectors; a descriptor file, up to 1 MiB - 1. */
export const EMBEDDED_DESC_OFFSET = 0x200;
export const EMBEDDED_DESC_BYTES = 20 * SECTOR_BYTES;
export const MAX_DESC_FILE_BYTES = (1 << 20) - 1;
/** Most extents a descriptor may name. */
export const MAX_EXTENTS = 4096;

/** What qemu-img create makes: 64 KiB grains, 512 entries a table. */
export const NEW_GRAIN_SECTORS = 128;
export const NEW_GTES_PER_GT = 512;

export type VmdkSubformat = 'monolithicSparse' | 'streamOptimized';
export const VMDK_SUBFORMATS: readonly VmdkSubformat[] = ['monolithicSparse', 'streamOptimized'];
export type VmdkAdapterType = 'ide' | 'buslogic' | 'lsilogic' | 'legacyESX';
export const VMDK_ADAPTER_TYPES: readonly VmdkAdapterType[] = ['ide', 'buslogic', 'lsilogic', 'legacyESX'];
/** The create types QEMU opens from a descriptor file. */
export const DESCRIPTOR_FILE_TYPES: readonly string[] = ['monolithicFlat', 'vmfs', 'vmfsSparse', 'seSparse', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'];
