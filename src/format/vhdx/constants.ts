/**
 * VHDX, as Microsoft's VHDX Format Specification v1.00 lays it out and
 * QEMU's block/vhdx.c reads it. Every field is little-endian.
 *
 * The first MiB is the header section: the file identifier ("vhdxfile" and
 * a UTF-16 creator) at 0, two 4 KiB headers at 64 and 128 KiB (the valid one
 * with the higher sequence number is current; each has a CRC-32C), and two
 * copies of the region table at 192 and 256 KiB (64 KiB each, CRC-32C) that
 * locate the BAT and the metadata region. The log the current header names
 * (at 1 MiB in a new image) journals metadata changes: a header whose log
 * GUID is zero has nothing to replay.
 *
 * The metadata region starts with a table of items: file parameters (block
 * size, leave-blocks-allocated, has-parent), virtual disk size, page 83
 * data, logical and physical sector sizes. The BAT has one 64-bit entry per
 * payload block (state in bits 0-2, file offset in MiB in bits 20-63), and
 * after every `chunkRatio` payload entries one sector bitmap entry
 * (differencing images only use those).
 */

export const KiB = 1 << 10;
export const MiB = 1 << 20;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** "vhdxfile": the file identifier's signature at offset 0 (what qemu-img probes). */
export const FILE_SIGNATURE = 'vhdxfile';
export const FILE_ID_OFFSET = 0;
/** The file identifier's creator: UTF-16LE, 512 bytes, diagnostic only. */
export const CREATOR_OFFSET = 8;
export const CREATOR_BYTES = 512;

export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
/** A header's checksum covers 4 KiB. */
export const HEADER_BYTES = 4 * KiB;
export const REGION_TABLE1_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
/** A region table's checksum covers 64 KiB (the header block size). */
export const REGION_TABLE_BYTES = 64 * KiB;
/** Where the header section ends: the log of a new image starts here. */
export const HEADER_SECTION_END = MiB;

/** "head", "regi", "metadata" (little-endian u32 / u64 spellings). */
export const HEADER_SIGNATURE = 'head';
export const REGION_SIGNATURE = 'regi';
export const METADATA_SIGNATURE = 'metadata';

/** Header fields (byte offsets). */
export const H_SIGNATURE = 0;
export const H_CHECKSUM = 4;
export const H_SEQUENCE = 8;
export const H_FILE_WRITE_GUID = 16;
export const H_DATA_WRITE_GUID = 32;
export const H_LOG_GUID = 48;
export const H_LOG_VERSION = 64;
export const H_VERSION = 66;
export const H_LOG_LENGTH = 68;
export const H_LOG_OFFSET = 72;
/** The header fields' own size (the rest of the 4 KiB is reserved). */
export const HEADER_STRUCT_BYTES = 80;

/** Region table: header fields, then 32-byte entries. */
export const RT_SIGNATURE = 0;
export const RT_CHECKSUM = 4;
export const RT_ENTRY_COUNT = 8;
export const RT_HEADER_BYTES = 16;
export const RT_ENTRY_BYTES = 32;
export const RT_MAX_ENTRIES = 2047;
/** Entry fields: GUID, then these. */
export const RTE_FILE_OFFSET = 16;
export const RTE_LENGTH = 24;
export const RTE_DATA_BITS = 28;
export const REGION_REQUIRED = 0x1;

/** Metadata table: a 32-byte header, then 32-byte entries, in at most 64 KiB. */
export const MT_ENTRY_COUNT = 10;
export const MT_HEADER_BYTES = 32;
export const MT_ENTRY_BYTES = 32;
export const MT_MAX_ENTRIES = 2047;
export const METADATA_TABLE_BYTES = 64 * KiB;
/** Entry fields: item GUID, then these. */
export const MTE_OFFSET = 16;
export const MTE_LENGTH = 20;
export const MTE_DATA_BITS = 24;
export const META_IS_USER = 0x1;
export const META_IS_VIRTUAL_DISK = 0x2;
export const META_IS_REQUIRED = 0x4;

/** File parameters' data bits. */
export const PARAMS_LEAVE_BLOCKS_ALLOCATED = 0x1;
export const PARAMS_HAS_PARENT = 0x2;

/** Region and metadata item GUIDs, as the specification spells them. */
export const BAT_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const METADATA_GUID = '8b7ca206-4790-4b9a-b8fe-575f050f886e';
export const FILE_PARAMETERS_GUID = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const VIRTUAL_DISK_SIZE_GUID = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const PAGE83_GUID = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const LOGICAL_SECTOR_GUID = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const PHYSICAL_SECTOR_GUID = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const PARENT_LOCATOR_GUID = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

/** Payload block states (a BAT entry's bits 0-2). */
export const PAYLOAD_NOT_PRESENT = 0;
export const PAYLOAD_UNDEFINED = 1;
export const PAYLOAD_ZERO = 2;
export const PAYLOAD_UNMAPPED = 3;
/** UNMAPPED as the 0.95 draft numbered it (qemu-img reads it as UNMAPPED). */
export const PAYLOAD_UNMAPPED_V095 = 5;
export const PAYLOAD_FULLY_PRESENT = 6;
export const PAYLOAD_PARTIALLY_PRESENT = 7;
/** Sector bitmap block states. */
export const SB_NOT_PRESENT = 0;
export const SB_PRESENT = 6;
export const BAT_ENTRY_BYTES = 8;
export const BAT_STATE_MASK = 0x7;

/** What a payload block's state means to a reader. */
export type PayloadKind = 'zero' | 'data' | 'partial' | 'invalid';

/** Classifies a payload BAT entry's state, as qemu-img reads it. */
export function payloadKind(state: number): PayloadKind {
  switch (state) {
    case PAYLOAD_NOT_PRESENT:
    case PAYLOAD_UNDEFINED:
    case PAYLOAD_ZERO:
    case PAYLOAD_UNMAPPED:
    case PAYLOAD_UNMAPPED_V095:
      return 'zero';
    case PAYLOAD_FULLY_PRESENT:
      return 'data';
    case PAYLOAD_PARTIALLY_PRESENT:
      return 'partial';
    default:
      return 'invalid';
  }
}

/** Block sizes: a power of two from 1 to 256 MiB. */
export const BLOCK_SIZE_MIN = MiB;
export const BLOCK_SIZE_MAX = 256 * MiB;
/** Sectors a chunk (the payload blocks one sector bitmap block covers) holds: 2^23. */
export const MAX_SECTORS_PER_BLOCK = 1 << 23;
/** The logical sector size qemu-img reads (it refuses 4096). */
export const LOGICAL_SECTOR_BYTES = 512;
/** Largest virtual disk qemu-img creates: 64 TiB. */
export const MAX_IMAGE_BYTES = 64 * TiB;
/** A new image's log: 1 MiB unless log_size says otherwise. */
export const DEFAULT_LOG_BYTES = MiB;

/** Log sectors are 4 KiB; the log's offset and length are multiples of 1 MiB. */
export const LOG_SECTOR_BYTES = 4 * KiB;
export const LOG_MIN_BYTES = MiB;
export const LOG_ENTRY_SIGNATURE = 'loge';
export const LOG_ZERO_SIGNATURE = 'zero';
export const LOG_DESC_SIGNATURE = 'desc';
export const LOG_DATA_SIGNATURE = 'data';
/** Log entry header fields. */
export const LE_CHECKSUM = 4;
export const LE_ENTRY_LENGTH = 8;
export const LE_TAIL = 12;
export const LE_SEQUENCE = 16;
export const LE_DESCRIPTOR_COUNT = 24;
export const LE_LOG_GUID = 32;
export const LE_FLUSHED_FILE_OFFSET = 48;
export const LE_LAST_FILE_OFFSET = 56;
export const LOG_ENTRY_HEADER_BYTES = 64;
/** Log descriptors: 32 bytes. */
export const LOG_DESCRIPTOR_BYTES = 32;
export const LD_TRAILING_BYTES = 4;
export const LD_LEADING_BYTES = 8;
export const LD_ZERO_LENGTH = 8;
export const LD_FILE_OFFSET = 16;
export const LD_SEQUENCE = 24;
/** Data sectors: signature, sequence high, 4084 bytes, sequence low. */
export const LDS_SEQUENCE_HIGH = 4;
export const LDS_DATA = 8;
export const LDS_DATA_BYTES = 4084;
export const LDS_SEQUENCE_LOW = 4092;
