/**
 * Header extensions, the area between the header and the backing file name
 * in the first cluster: reading them (backing format, the feature name
 * table, bitmaps; any other kept as it is) and writing those a new image
 * carries. Each is `type u32, length u32`, data padded to 8 bytes; type 0
 * ends the list.
 */
import { FormatError } from '../image-format.js';
import { getU64Checked } from './bytes.js';
import {
  BITMAP_EXT_BYTES,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_DATA_FILE,
  EXT_END,
  EXT_FEATURE_TABLE,
  EXT_HEADER_BYTES,
  FEATURE_NAME_BYTES,
  FEATURE_NAME_ENTRY_BYTES,
  FEATURE_TYPE_AUTOCLEAR,
  FEATURE_TYPE_COMPATIBLE,
  FEATURE_TYPE_INCOMPATIBLE,
  MAX_HEADER_EXTENSIONS,
  VERSION_3,
} from './constants.js';

export interface FeatureName {
  type: number;
  bit: number;
  name: string;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  directoryBytes: number;
  directoryOffset: number;
}

export interface UnknownExtension {
  type: number;
  data: Uint8Array;
}

export interface HeaderExtensions {
  backingFormat?: string;
  featureNames: FeatureName[];
  bitmaps?: BitmapsExtension;
  unknown: UnknownExtension[];
  end: number;
}

/**
 * Reads the extensions from `start` (the header length) up to `end` (the
 * backing file name, or the end of the first cluster) as QEMU reads them.
 */
export function parseExtensions(cluster0: Uint8Array, start: number, end: number): HeaderExtensions {
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const out: HeaderExtensions = { featureNames: [], unknown: [], end: start };
  const limit = Math.min(end, cluster0.length);
  let offset = start;
  for (let n = 0; n < MAX_HEADER_EXTENSIONS; n++) {
    if (offset >= limit) {
      out.end = offset;
      return out; // the area is used up: the list ends here (as QEMU reads it)
    }
    if (offset + EXT_HEADER_BYTES > limit) {
      throw new FormatError(`qcow2 header extension at ${offset} runs past the end of the extension area (${limit})`, 'header_extension_length');
    }
    const type = view.getUint32(offset, false);
    const length = view.getUint32(offset + 4, false);
    const dataAt = offset + EXT_HEADER_BYTES;
    // The length is checked before the type, the end marker's included (as QEMU reads it).
    if (length > limit - dataAt) {
      throw new FormatError(`qcow2 header extension 0x${type.toString(16)} length is ${length}: past the end of the extension area (${limit - dataAt} bytes left)`, 'header_extension_length');
    }
    if (type === EXT_END) {
      out.end = offset;
      return out;
    }
    const data = cluster0.subarray(dataAt, dataAt + length);
    switch (type) {
      case EXT_BACKING_FORMAT:
        if (length > 15) throw new FormatError(`qcow2 backing format extension length is ${length} (at most 15)`, 'backing_format');
        out.backingFormat = new TextDecoder().decode(data).replace(/\0+$/, '');
        break;
      case EXT_FEATURE_TABLE:
        for (let i = 0; i + FEATURE_NAME_ENTRY_BYTES <= length; i += FEATURE_NAME_ENTRY_BYTES) {
          const raw = data.subarray(i + 2, i + 2 + FEATURE_NAME_BYTES);
          const nul = raw.indexOf(0);
          out.featureNames.push({ type: data[i]!, bit: data[i + 1]!, name: new TextDecoder().decode(nul >= 0 ? raw.subarray(0, nul) : raw) });
        }
        break;
      case EXT_BITMAPS: {
        if (length !== BITMAP_EXT_BYTES) {
          throw new FormatError(`qcow2 bitmaps extension length is ${length} (expected ${BITMAP_EXT_BYTES})`, 'bitmaps_extension');
        }
        const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
        out.bitmaps = {
          nbBitmaps: v.getUint32(0, false),
          directoryBytes: getU64Checked(v, 8, 'bitmap_directory_size'),
          directoryOffset: getU64Checked(v, 16, 'bitmap_directory_offset'),
        };
        break;
      }
      case EXT_DATA_FILE:
      default:
        out.unknown.push({ type, data: data.slice() });
    }
    offset = dataAt + Math.ceil(length / 8) * 8;
  }
  throw new FormatError(`qcow2 header has more than ${MAX_HEADER_EXTENSIONS} extensions`, 'header_extension');
}

// ---- the extensions of a new image ---------------------------------------------------

const FEATURE_TABLE: FeatureName[] = [
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: 0, name: 'dirty bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: 1, name: 'corrupt bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: 2, name: 'external data file' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: 3, name: 'compression type' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: 4, name: 'extended L2 entries' },
  { type: FEATURE_TYPE_COMPATIBLE, bit: 0, name: 'lazy refcounts' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: 0, name: 'bitmaps' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: 1, name: 'raw external data' },
];

/**
 * Writes the extensions of a new image into its first cluster `out` from
 * `at` (the header length), then the end marker: the backing format if
 * there is one, and the feature name table (QEMU writes it for version 3
 * when there is room for it). Returns the offset past the end marker.
 */
export function writeNewExtensions(out: Uint8Array, at: number, version: number, backingFormat: string | undefined): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const ext = (type: number, data: Uint8Array) => {
    view.setUint32(at, type, false);
    view.setUint32(at + 4, data.length, false);
    out.set(data, at + 8);
    at += 8 + Math.ceil(data.length / 8) * 8;
  };
  if (backingFormat !== undefined) ext(EXT_BACKING_FORMAT, new TextEncoder().encode(backingFormat));
  if (version === VERSION_3 && out.length > 4096) {
    const table = new Uint8Array(FEATURE_TABLE.length * FEATURE_NAME_ENTRY_BYTES);
    FEATURE_TABLE.forEach((f, i) => {
      table[i * FEATURE_NAME_ENTRY_BYTES] = f.type;
      table[i * FEATURE_NAME_ENTRY_BYTES + 1] = f.bit;
      table.set(new TextEncoder().encode(f.name), i * FEATURE_NAME_ENTRY_BYTES + 2);
    });
    ext(EXT_FEATURE_TABLE, table);
  }
  return at + EXT_HEADER_BYTES; // end marker (zeroes)
}
