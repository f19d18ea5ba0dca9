/**
 * The text descriptor, read as QEMU reads it: CID and parentCID are the
 * hex numbers after the first "CID=" and "parentCID=", createType the
 * quoted word after "createType=", a parent (parentFileNameHint) makes the
 * disk a delta; in a descriptor file, each line "RW SECTORS TYPE "NAME"
 * [OFFSET]" names an extent (other access modes are skipped, as QEMU skips
 * them). And the descriptor qemu-img create writes.
 */
import { FormatError } from '../image-format.js';
import { DESCRIPTOR_FILE_TYPES, MAX_EXTENTS, SECTOR_BYTES, type VmdkAdapterType } from './constants.js';

export interface ExtentLine {
  sectors: number;
  type: 'FLAT' | 'VMFS' | 'SPARSE' | 'VMFSSPARSE' | 'SESPARSE';
  name: string;
  /** FLAT: where the extent's bytes start in its file. */
  flatOffsetBytes: number;
}

/** The descriptor's text up to its first NUL (QEMU reads it as a C string). */
export function descriptorText(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder('latin1').decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** The hex number after `key` (the key's first occurrence, as strstr finds it), or null. */
function hexAfter(text: string, key: 'CID' | 'parentCID'): number | null {
  const at = text.indexOf(key);
  if (at < 0) return null;
  const m = /^\s*(?:0[xX])?([0-9a-fA-F]+)/.exec(text.slice(at + key.length + 1, at + key.length + 64));
  if (!m) return null;
  // sscanf %x keeps the low 32 bits of a longer number.
  return Number(BigInt(`0x${m[1]}`) & 0xffffffffn);
}

/** CID and parentCID, as vmdk_read_cid reads them; a parent is refused (diskmirror reads no VMDK deltas). */
export function readCids(text: string, where: string): { cid: number; parentCid: number } {
  const cid = hexAfter(text, 'CID');
  const parentCid = hexAfter(text, 'parentCID');
  if (cid === null) throw new FormatError(`vmdk descriptor of ${where} has no CID`, 'CID');
  if (parentCid === null) throw new FormatError(`vmdk descriptor of ${where} has no parentCID`, 'parentCID');
  const hint = /parentFileNameHint="([^"]*)"/.exec(text);
  if (hint) throw new FormatError(`vmdk image ${where} is a delta of '${hint[1]}' (parentFileNameHint): VMDK backing files are not supported`, 'parentFileNameHint');
  return { cid, parentCid };
}

/** createType's value, as vmdk_parse_description finds it. */
export function createTypeOf(text: string): string | null {
  const at = text.indexOf('createType');
  if (at < 0) return null;
  const start = at + 'createType'.length + 2;
  if (start >= text.length) return null;
  const end = text.indexOf('"', start);
  if (end < 0 || end - start >= 128) return null;
  return text.slice(start, end);
}

const EXTENT_LINE = /^\s*(\S{1,10})\s+([+-]?\d+)\s+(\S{1,10})\s+"([^\n\r"]{1,511})"(?:\s+([+-]?\d+))?/;

/** The extents of a descriptor file, checked as QEMU checks them. */
export function parseExtentLines(text: string): ExtentLine[] {
  const out: ExtentLine[] = [];
  for (const line of text.split('\n')) {
    const m = EXTENT_LINE.exec(line);
    if (!m || m[1] !== 'RW') continue;
    const type = m[3]!;
    const sectors = Number(m[2]);
    let flatOffset = m[5] === undefined ? -1 : Number(m[5]);
    const invalid = () => new FormatError(`Invalid extent line: ${line.replace(/\r$/, '')}`, 'extent');
    if (type === 'FLAT') {
      if (m[5] === undefined || flatOffset < 0) throw invalid();
    } else if (type === 'VMFS') {
      if (m[5] !== undefined) throw invalid();
      flatOffset = 0;
    } else if (m[5] !== undefined) {
      throw invalid();
    }
    if (sectors <= 0 || !['FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'SESPARSE'].includes(type)) continue;
    if (!Number.isSafeInteger(sectors * SECTOR_BYTES) || !Number.isSafeInteger(Math.max(0, flatOffset) * SECTOR_BYTES)) throw invalid();
    if (out.length >= MAX_EXTENTS) throw new FormatError(`vmdk descriptor names more than ${MAX_EXTENTS} extents`, 'extent');
    out.push({ sectors, type: type as ExtentLine['type'], name: m[4]!, flatOffsetBytes: Math.max(0, flatOffset) * SECTOR_BYTES });
  }
  return out;
}

/** A descriptor file's create type, checked as QEMU checks it. */
export function descriptorFileType(text: string): string {
  const type = createTypeOf(text);
  if (type === null) throw new FormatError('invalid VMDK image descriptor (no createType)', 'createType');
  if (!DESCRIPTOR_FILE_TYPES.includes(type)) throw new FormatError(`Unsupported image type '${type}'`, 'createType');
  return type;
}

/**
 * The descriptor qemu-img create writes into a new sparse file: a random
 * CID, no parent, one extent, and the DDB with qemu-img's geometry (16
 * heads for ide, 255 for the other adapters, 63 sectors a track).
 */
export function buildDescriptor(o: { cid: number; createType: string; sectors: number; extentName: string; adapterType: VmdkAdapterType }): string {
  const heads = o.adapterType === 'ide' ? 16 : 255;
  const cylinders = Math.floor((o.sectors * SECTOR_BYTES) / (63 * heads * SECTOR_BYTES));
  return [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${o.cid.toString(16)}`,
    'parentCID=ffffffff',
    `createType="${o.createType}"`,
    '',
    '# Extent description',
    `RW ${o.sectors} SPARSE "${o.extentName}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.virtualHWVersion = "4"',
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${o.adapterType}"`,
    'ddb.toolsVersion = "2147483647"',
    '',
  ].join('\n');
}
