/**
 * The VHDX header section: GUIDs as the file stores them, the two headers
 * (the valid one with the higher sequence number is current, as qemu-img
 * picks it), the region table (its BAT and metadata entries), and the same
 * structures for a new image. Every field is checked before use: a bad one
 * is a FormatError that names it.
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { crc32c } from '../../util/crc32c.js';
import { FormatError } from '../image-format.js';
import {
  BAT_GUID,
  FILE_SIGNATURE,
  H_CHECKSUM,
  H_DATA_WRITE_GUID,
  H_FILE_WRITE_GUID,
  H_LOG_GUID,
  H_LOG_LENGTH,
  H_LOG_OFFSET,
  H_LOG_VERSION,
  H_SEQUENCE,
  H_SIGNATURE,
  H_VERSION,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_BYTES,
  HEADER_SECTION_END,
  HEADER_SIGNATURE,
  HEADER_STRUCT_BYTES,
  LOG_MIN_BYTES,
  METADATA_GUID,
  REGION_REQUIRED,
  REGION_SIGNATURE,
  REGION_TABLE_BYTES,
  RT_CHECKSUM,
  RT_ENTRY_BYTES,
  RT_ENTRY_COUNT,
  RT_HEADER_BYTES,
  RT_MAX_ENTRIES,
  RT_SIGNATURE,
  RTE_DATA_BITS,
  RTE_FILE_OFFSET,
  RTE_LENGTH,
} from './constants.js';

/** The text of the GUID at `at` (the first three groups little-endian, as Microsoft stores them). */
export function guidText(bytes: Uint8Array, at = 0): string {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const hex = order.map((i) => bytes[at + i]!.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Writes the GUID `text` at `at`, as guidText reads it. */
export function putGuid(out: Uint8Array, at: number, text: string): void {
  const hex = text.replace(/-/g, '');
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  order.forEach((from, i) => (out[at + i] = parseInt(hex.slice(from * 2, from * 2 + 2), 16)));
}

/** 16 random bytes: a new GUID. */
export function randomGuid(): Uint8Array {
  const out = new Uint8Array(16);
  globalThis.crypto.getRandomValues(out);
  return out;
}

export function isZeroGuid(bytes: Uint8Array, at: number): boolean {
  for (let i = 0; i < 16; i++) if (bytes[at + i] !== 0) return false;
  return true;
}

export function ascii(bytes: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + length));
}

/** A u64 field as a number, refused past 2^53 (no file is that large). */
export function u64(view: DataView, at: number, what: string, field: string): number {
  const high = view.getUint32(at + 4, true);
  const low = view.getUint32(at, true);
  if (high >= 1 << 21) throw new FormatError(`vhdx ${what} field ${field} is too large (${view.getBigUint64(at, true)})`, field);
  return high * 2 ** 32 + low;
}

export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 2 ** 32, true);
  view.setUint32(at + 4, Math.floor(value / 2 ** 32), true);
}

/** Whether the CRC-32C of `bytes`, with its checksum field at `at` taken as zero, is the one stored there. */
export function checksumValid(bytes: Uint8Array, at: number): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(at, true);
  view.setUint32(at, 0, true);
  const ok = crc32c(bytes) === stored;
  view.setUint32(at, stored, true);
  return ok;
}

/** Stores the CRC-32C of `bytes` (with its checksum field zero) at `at`. */
export function putChecksum(bytes: Uint8Array, at: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setUint32(at, 0, true);
  view.setUint32(at, crc32c(bytes), true);
}

export function hasFileSignature(head: Uint8Array): boolean {
  return head.length >= 8 && ascii(head, 0, 8) === FILE_SIGNATURE;
}

export interface VhdxHeader {
  /** 0 for the header at 64 KiB, 1 for the one at 128 KiB. */
  slot: 0 | 1;
  sequence: bigint;
  logGuid: Uint8Array;
  logVersion: number;
  logLength: number;
  logOffset: number;
  /** The header's 4 KiB as read (reserved bytes kept when it is written again). */
  bytes: Uint8Array;
}

export const HEADER_OFFSETS = [HEADER1_OFFSET, HEADER2_OFFSET] as const;

/** The header in `bytes` if its checksum, signature and version are right (as qemu-img's test), else why not. */
function readHeader(bytes: Uint8Array, slot: 0 | 1): VhdxHeader | string {
  if (!checksumValid(bytes, H_CHECKSUM)) return 'checksum';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (ascii(bytes, H_SIGNATURE, 4) !== HEADER_SIGNATURE) return 'signature';
  if (view.getUint16(H_VERSION, true) !== 1) return `version ${view.getUint16(H_VERSION, true)}`;
  return {
    slot,
    sequence: view.getBigUint64(H_SEQUENCE, true),
    logGuid: bytes.slice(H_LOG_GUID, H_LOG_GUID + 16),
    logVersion: view.getUint16(H_LOG_VERSION, true),
    logLength: view.getUint32(H_LOG_LENGTH, true),
    logOffset: u64(view, H_LOG_OFFSET, 'header', 'log_offset'),
    bytes,
  };
}

/** Chooses the current header from the two 4 KiB headers, as qemu-img does. */
export function chooseHeader(first: Uint8Array, second: Uint8Array): VhdxHeader {
  const h1 = readHeader(first, 0);
  const h2 = readHeader(second, 1);
  if (typeof h1 === 'string' && typeof h2 === 'string') {
    throw new FormatError(`vhdx has no valid header (the one at 64 KiB: bad ${h1}; at 128 KiB: bad ${h2})`, 'header');
  }
  if (typeof h1 === 'string') return h2 as VhdxHeader;
  if (typeof h2 === 'string') return h1;
  if (h1.sequence > h2.sequence) return h1;
  if (h2.sequence > h1.sequence) return h2;
  // Disk2VHD writes two identical headers: not corrupt.
  const same = first.subarray(0, HEADER_STRUCT_BYTES).every((b, i) => b === second[i]);
  if (!same) throw new FormatError(`vhdx headers differ but have the same sequence_number ${h1.sequence}`, 'sequence_number');
  return h1;
}

/** The log's place and version checked as qemu-img checks them on open; true when a log may need replay. */
export function logPresent(header: VhdxHeader): boolean {
  if (header.logOffset < LOG_MIN_BYTES || header.logOffset % LOG_MIN_BYTES !== 0) {
    throw new FormatError(`vhdx header field log_offset is ${header.logOffset} (expected a multiple of 1 MiB, at least 1 MiB)`, 'log_offset');
  }
  if (header.logVersion !== 0) throw new FormatError(`vhdx header field log_version is ${header.logVersion} (expected 0)`, 'log_version');
  if (isZeroGuid(header.logGuid, 0) || header.logLength === 0) return false;
  if (header.logLength % LOG_MIN_BYTES !== 0) throw new FormatError(`vhdx header field log_length is ${header.logLength} (expected a multiple of 1 MiB)`, 'log_length');
  return true;
}

/** A header as qemu-img writes one: `base` (4 KiB, reserved bytes kept) with these fields and its checksum. */
export function buildHeader(
  base: Uint8Array | null,
  fields: { sequence: bigint; fileWriteGuid: Uint8Array; dataWriteGuid: Uint8Array; logGuid: Uint8Array; logLength: number; logOffset: number },
): Uint8Array {
  const out = base ? base.slice(0, HEADER_BYTES) : new Uint8Array(HEADER_BYTES);
  out.fill(0, 0, HEADER_STRUCT_BYTES);
  const view = new DataView(out.buffer);
  out.set(Array.from(HEADER_SIGNATURE, (c) => c.charCodeAt(0)), H_SIGNATURE);
  view.setBigUint64(H_SEQUENCE, fields.sequence & 0xffffffffffffffffn, true);
  out.set(fields.fileWriteGuid, H_FILE_WRITE_GUID);
  out.set(fields.dataWriteGuid, H_DATA_WRITE_GUID);
  out.set(fields.logGuid, H_LOG_GUID);
  view.setUint16(H_LOG_VERSION, 0, true);
  view.setUint16(H_VERSION, 1, true);
  view.setUint32(H_LOG_LENGTH, fields.logLength, true);
  setU64(view, H_LOG_OFFSET, fields.logOffset);
  putChecksum(out, H_CHECKSUM);
  return out;
}

/** A region of the file: where it starts and how many bytes it takes. */
export interface Region {
  offset: number;
  bytes: number;
}

export interface RegionTable {
  bat: Region;
  metadata: Region;
}

function overlaps(a: Region, b: Region): boolean {
  return a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
}

/** Reads the region table (64 KiB at 192 KiB, as qemu-img reads the first copy only), with the log's region for the overlap checks. */
export function parseRegionTable(table: Uint8Array, log: Region, fileSize: number): RegionTable {
  if (!checksumValid(table, RT_CHECKSUM)) throw new FormatError('vhdx region table checksum is wrong', 'region_table');
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  if (ascii(table, RT_SIGNATURE, 4) !== REGION_SIGNATURE) throw new FormatError('vhdx region table has no "regi" signature', 'region_table');
  const count = view.getUint32(RT_ENTRY_COUNT, true);
  if (count > RT_MAX_ENTRIES) throw new FormatError(`vhdx region table field entry_count is ${count} (at most ${RT_MAX_ENTRIES})`, 'entry_count');
  const regions: Region[] = [log];
  let bat: Region | undefined;
  let metadata: Region | undefined;
  for (let i = 0; i < count; i++) {
    const at = RT_HEADER_BYTES + i * RT_ENTRY_BYTES;
    const guid = guidText(table, at);
    const region = { offset: u64(view, at + RTE_FILE_OFFSET, 'region table', 'file_offset'), bytes: view.getUint32(at + RTE_LENGTH, true) };
    if (regions.some((r) => overlaps(r, region))) throw new FormatError(`vhdx region table entry ${i} (${guid}) at ${region.offset} overlaps the log or another region`, 'region_table');
    regions.push(region);
    if (guid === BAT_GUID || guid === METADATA_GUID) {
      const name = guid === BAT_GUID ? 'BAT' : 'metadata';
      if ((guid === BAT_GUID ? bat : metadata) !== undefined) throw new FormatError(`vhdx region table has two ${name} regions`, 'region_table');
      if (region.offset < HEADER_SECTION_END || region.offset + region.bytes > fileSize) {
        throw new FormatError(`vhdx ${name} region at ${region.offset} (${region.bytes} bytes) is not inside the file of ${fileSize} bytes past its header section`, 'region_table');
      }
      if (guid === BAT_GUID) bat = region;
      else metadata = region;
      continue;
    }
    if (view.getUint32(at + RTE_DATA_BITS, true) & REGION_REQUIRED) throw new FormatError(`vhdx region table entry ${i} is a required region diskmirror does not know (${guid})`, 'region_table');
  }
  if (!bat || !metadata) throw new FormatError(`vhdx region table has no ${bat ? 'metadata' : 'BAT'} region`, 'region_table');
  return { bat, metadata };
}

/** The region table of a new image (its checksum included). */
export function buildRegionTable(bat: Region, metadata: Region): Uint8Array {
  const out = new Uint8Array(REGION_TABLE_BYTES);
  const view = new DataView(out.buffer);
  out.set(Array.from(REGION_SIGNATURE, (c) => c.charCodeAt(0)), RT_SIGNATURE);
  view.setUint32(RT_ENTRY_COUNT, 2, true);
  [
    [BAT_GUID, bat],
    [METADATA_GUID, metadata],
  ].forEach(([guid, region], i) => {
    const at = RT_HEADER_BYTES + i * RT_ENTRY_BYTES;
    putGuid(out, at, guid as string);
    setU64(view, at + RTE_FILE_OFFSET, (region as Region).offset);
    view.setUint32(at + RTE_LENGTH, (region as Region).bytes, true);
    view.setUint32(at + RTE_DATA_BITS, REGION_REQUIRED, true);
  });
  putChecksum(out, RT_CHECKSUM);
  return out;
}

/** Writes the header that is not `current` (sequence number one past it), flushed, and returns it. */
export async function writeNextHeader(file: BlockDevice, current: VhdxHeader, fields: { fileWriteGuid: Uint8Array; dataWriteGuid: Uint8Array; logGuid: Uint8Array }): Promise<VhdxHeader> {
  if (file.readOnly) throw new BlockError('EACCES', 'write', 0, 0, 'the file is read-only');
  const slot = current.slot === 0 ? 1 : 0;
  const sequence = current.sequence + 1n;
  const bytes = buildHeader(current.bytes, { sequence, ...fields, logLength: current.logLength, logOffset: current.logOffset });
  await file.write(HEADER_OFFSETS[slot], bytes);
  await file.flush();
  return { ...current, slot, sequence, logGuid: fields.logGuid.slice(), bytes };
}
