/**
 * Every value of the qcow2 format that the code relies on, named once
 * (QEMU's docs/interop/qcow2.txt and block/qcow2.h). Everything on disk is
 * big-endian.
 *
 * L1, L2 and refcount-table entries are 64-bit bit patterns. On the hot path
 * they are handled as two 32-bit halves (`hi` = bits 32..63, `lo` = bits
 * 0..31), which is exact and much faster than BigInt; the masks below are
 * given for each half. Host offsets use bits 9..55, so they always fit in a
 * JS number (< 2^56 is not safe in general, but the format caps offsets at
 * 2^56 and every offset is checked against the file before use).
 */

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

// ---- header layout (byte offsets) --------------------------------------------
export const HDR_MAGIC = 0;
export const HDR_VERSION = 4;
export const HDR_BACKING_FILE_OFFSET = 8;
export const HDR_BACKING_FILE_SIZE = 16;
export const HDR_CLUSTER_BITS = 20;
export const HDR_SIZE = 24;
export const HDR_CRYPT_METHOD = 32;
export const HDR_L1_SIZE = 36;
export const HDR_L1_TABLE_OFFSET = 40;
export const HDR_REFCOUNT_TABLE_OFFSET = 48;
export const HDR_REFCOUNT_TABLE_CLUSTERS = 56;
export const HDR_NB_SNAPSHOTS = 60;
export const HDR_SNAPSHOTS_OFFSET = 64;
export const HDR_INCOMPATIBLE_FEATURES = 72;
export const HDR_COMPATIBLE_FEATURES = 80;
export const HDR_AUTOCLEAR_FEATURES = 88;
export const HDR_REFCOUNT_ORDER = 96;
export const HDR_HEADER_LENGTH = 100;
export const HDR_COMPRESSION_TYPE = 104;

/** Header length of a version 2 image. */
export const V2_HEADER_BYTES = 72;
/** The smallest version 3 header. */
export const V3_MIN_HEADER_BYTES = 104;
/** What QEMU 7.2 writes for version 3 (with the compression type byte and padding). */
export const V3_HEADER_BYTES = 112;

export const VERSION_2 = 2;
export const VERSION_3 = 3;

// ---- limits --------------------------------------------------------------------
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Extended L2 entries need at least 16 KiB clusters (32 subclusters of 512 bytes). */
export const MIN_CLUSTER_BITS_EXTENDED_L2 = 14;
export const DEFAULT_CLUSTER_BITS = 16;
export const MAX_BACKING_FILE_NAME_BYTES = 1023;
export const MAX_REFCOUNT_ORDER = 6;
export const DEFAULT_REFCOUNT_ORDER = 4;
/** QEMU's QCOW_MAX_L1_SIZE: 32 MiB of L1 table. */
export const MAX_L1_BYTES = 32 << 20;
/** QEMU's QCOW_MAX_REFTABLE_SIZE: 8 MiB of refcount table. */
export const MAX_REFTABLE_BYTES = 8 << 20;
export const MAX_SNAPSHOTS = 65536;
/** QEMU's QCOW_MAX_SNAPSHOTS_SIZE. */
export const MAX_SNAPSHOT_TABLE_BYTES = 1024 * MAX_SNAPSHOTS;
export const MAX_SNAPSHOT_EXTRA_DATA_BYTES = 1024;
/** Host offsets (and the end of anything in the file) stay below 2^56. */
export const MAX_HOST_OFFSET = 2 ** 56;
/** Virtual sizes QEMU accepts (QCOW_MAX... 2^63 - 512); we refuse what a JS number cannot hold. */
export const MAX_VIRTUAL_SIZE = Number.MAX_SAFE_INTEGER - 511;
/** Header extensions may not take more than the rest of the first cluster. */
export const MAX_HEADER_EXTENSIONS = 1024;

// ---- crypt method ------------------------------------------------------------------
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

// ---- feature bits ------------------------------------------------------------------
export const INCOMPAT_DIRTY = 1 << 0;
export const INCOMPAT_CORRUPT = 1 << 1;
export const INCOMPAT_DATA_FILE = 1 << 2;
export const INCOMPAT_COMPRESSION = 1 << 3;
export const INCOMPAT_EXTL2 = 1 << 4;
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
export const INCOMPAT_NAMES: Record<number, string> = {
  0: 'dirty bit',
  1: 'corrupt bit',
  2: 'external data file',
  3: 'compression type',
  4: 'extended L2 entries',
};

export const COMPAT_LAZY_REFCOUNTS = 1 << 0;
export const COMPAT_NAMES: Record<number, string> = { 0: 'lazy refcounts' };

export const AUTOCLEAR_BITMAPS = 1 << 0;
export const AUTOCLEAR_DATA_FILE_RAW = 1 << 1;
export const AUTOCLEAR_NAMES: Record<number, string> = { 0: 'bitmaps', 1: 'raw external data' };

/** Feature name table entry types. */
export const FEATURE_TYPE_INCOMPATIBLE = 0;
export const FEATURE_TYPE_COMPATIBLE = 1;
export const FEATURE_TYPE_AUTOCLEAR = 2;
export const FEATURE_NAME_ENTRY_BYTES = 48;
export const FEATURE_NAME_BYTES = 46;

// ---- compression types --------------------------------------------------------------
export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;
export type CompressionType = 'zlib' | 'zstd';
export const COMPRESSION_NAMES: Record<number, CompressionType> = { 0: 'zlib', 1: 'zstd' };

// ---- header extensions ------------------------------------------------------------------
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;
/** Header extension header: type u32 + length u32. */
export const EXT_HEADER_BYTES = 8;

// ---- L1 entries ---------------------------------------------------------------------------
/** Bit 63 of L1 and standard L2 entries: refcount is exactly 1. In the hi half. */
export const OFLAG_COPIED_HI = 0x80000000;
/** Bit 62 of L2 entries: compressed cluster. In the hi half. */
export const OFLAG_COMPRESSED_HI = 0x40000000;
/** Bit 0 of standard L2 entries (v3): reads as zeroes. In the lo half. */
export const OFLAG_ZERO_LO = 0x1;
/** Bits 9..55 of L1 entries and standard L2 entries: a host offset. */
export const OFFSET_MASK_HI = 0x00ffffff;
export const OFFSET_MASK_LO = 0xfffffe00;
/** L1 reserved bits 0x7f000000000001ff. */
export const L1E_RESERVED_HI = 0x7f000000;
export const L1E_RESERVED_LO = 0x000001ff;
/** Standard L2 reserved bits 0x3f000000000001fe. */
export const L2E_RESERVED_HI = 0x3f000000;
export const L2E_RESERVED_LO = 0x000001fe;
/** Refcount table entries: bits 9..63 an offset, bits 0..8 reserved. */
export const REFT_RESERVED_LO = 0x000001ff;

/** Bytes of an L1 entry, of a standard L2 entry, and of an extended one (entry + bitmap). */
export const L1E_BYTES = 8;
export const L2E_BYTES = 8;
export const L2E_EXTENDED_BYTES = 16;
export const REFT_ENTRY_BYTES = 8;

// ---- subclusters (extended L2) ---------------------------------------------------------------
export const SUBCLUSTERS_PER_CLUSTER = 32;
/** In the 64-bit bitmap, bits 0..31 allocation (the lo half), bits 32..63 zero (the hi half). */
export const SUBCLUSTER_ALL = 0xffffffff;

// ---- compressed clusters ---------------------------------------------------------------------
export const COMPRESSED_SECTOR_BYTES = 512;

// ---- snapshots ---------------------------------------------------------------------------------
/** Fixed part of a snapshot table entry. */
export const SNAPSHOT_HEADER_BYTES = 40;

// ---- bitmaps extension ----------------------------------------------------------------------------
export const BITMAP_EXT_BYTES = 24;
export const BITMAP_DIR_ENTRY_BYTES = 24;
export const BITMAP_TABLE_ENTRY_OFFSET_MASK_HI = 0x00ffffff;
export const BITMAP_TABLE_ENTRY_OFFSET_MASK_LO = 0xfffffe00;
export const MAX_BITMAPS = 65535;
