/**
 * The qcow2 header: reading and parsing it, every field validated before it
 * is trusted (a bad field gives a FormatError naming the field and its
 * value), the names of feature bits, building the header of a new image,
 * and writing the fields an open image changes: feature bits and the
 * refcount table's location. The extensions that follow the header are in
 * header-extensions.ts.
 */
import { FormatError } from '../image-format.js';
import { bigU64, getU64Checked, putU32, setU64, u32 } from './bytes.js';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  AUTOCLEAR_NAMES,
  COMPAT_NAMES,
  COMPRESSION_NAMES,
  COMPRESSION_ZLIB,
  type CompressionType,
  CRYPT_NONE,
  FEATURE_TYPE_AUTOCLEAR,
  FEATURE_TYPE_COMPATIBLE,
  FEATURE_TYPE_INCOMPATIBLE,
  HDR_AUTOCLEAR_FEATURES,
  HDR_BACKING_FILE_OFFSET,
  HDR_BACKING_FILE_SIZE,
  HDR_CLUSTER_BITS,
  HDR_COMPATIBLE_FEATURES,
  HDR_COMPRESSION_TYPE,
  HDR_CRYPT_METHOD,
  HDR_HEADER_LENGTH,
  HDR_INCOMPATIBLE_FEATURES,
  HDR_L1_SIZE,
  HDR_L1_TABLE_OFFSET,
  HDR_MAGIC,
  HDR_NB_SNAPSHOTS,
  HDR_REFCOUNT_ORDER,
  HDR_REFCOUNT_TABLE_CLUSTERS,
  HDR_REFCOUNT_TABLE_OFFSET,
  HDR_SIZE,
  HDR_SNAPSHOTS_OFFSET,
  HDR_VERSION,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  INCOMPAT_KNOWN,
  INCOMPAT_NAMES,
  L1E_BYTES,
  MAX_BACKING_FILE_NAME_BYTES,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MAX_REFCOUNT_ORDER,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOTS,
  MAX_VIRTUAL_SIZE,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  QCOW2_MAGIC,
  V2_HEADER_BYTES,
  V3_HEADER_BYTES,
  V3_MIN_HEADER_BYTES,
  VERSION_2,
  VERSION_3,
  L2E_BYTES,
  L2E_EXTENDED_BYTES,
} from './constants.js';
import { type BitmapsExtension, type FeatureName, type UnknownExtension, parseExtensions, writeNewExtensions } from './header-extensions.js';

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileBytes: number;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  /** Feature bit sets (bits 0..31 of each 64-bit field; higher bits are kept in *Hi). */
  incompatible: number;
  incompatibleHi: number;
  compatible: number;
  compatibleHi: number;
  autoclear: number;
  autoclearHi: number;
  refcountOrder: number;
  headerLength: number;
  compressionType: CompressionType;
  extendedL2: boolean;
  /** Bytes of one L2 entry (8, or 16 with extended L2). */
  l2EntryBytes: number;
  /** Entries in one L2 table. */
  l2Entries: number;
  backingFile?: string;
  backingFormat?: string;
  featureNames: FeatureName[];
  bitmaps?: BitmapsExtension;
  unknownExtensions: UnknownExtension[];
  /** Where the extension area ended (the end marker's offset). */
  extensionsEnd: number;
}

function bitNames(bits: number, hiBits: number, names: Record<number, string>, table: FeatureName[], type: number): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    const set = bit < 32 ? (bits >>> bit) & 1 : (hiBits >>> (bit - 32)) & 1;
    if (!set) continue;
    const fromTable = table.find((f) => f.type === type && f.bit === bit)?.name;
    out.push(fromTable || names[bit] || `unknown feature bit ${bit}`);
  }
  return out;
}

/** Names of set feature bits, preferring the image's own feature name table. */
export function featureNames(header: Qcow2Header, kind: 'incompatible' | 'compatible' | 'autoclear', onlyUnknown = false): string[] {
  const [bits, hi, names, type, known] =
    kind === 'incompatible'
      ? [header.incompatible, header.incompatibleHi, INCOMPAT_NAMES, FEATURE_TYPE_INCOMPATIBLE, INCOMPAT_KNOWN]
      : kind === 'compatible'
        ? [header.compatible, header.compatibleHi, COMPAT_NAMES, FEATURE_TYPE_COMPATIBLE, 1]
        : [header.autoclear, header.autoclearHi, AUTOCLEAR_NAMES, FEATURE_TYPE_AUTOCLEAR, 3];
  const mask = onlyUnknown ? bits & ~known : bits;
  return bitNames(mask >>> 0, hi, onlyUnknown ? {} : names, header.featureNames, type);
}

/** Where a header is read from: the image file. */
export interface HeaderSource {
  readonly size: number;
  read(offset: number, into: Uint8Array): Promise<void>;
}

/** Reads and parses the header of the image in `file`: its first cluster, or all of the file if it is shorter. */
export async function readHeader(file: HeaderSource): Promise<Qcow2Header> {
  const head = new Uint8Array(Math.min(file.size, V3_MIN_HEADER_BYTES));
  await file.read(0, head);
  if (head.length < V2_HEADER_BYTES) throw new FormatError(`qcow2 image is ${file.size} bytes: too short for a header`, 'header');
  const clusterBits = u32(head, HDR_CLUSTER_BITS);
  const clusterBytes = clusterBits >= MIN_CLUSTER_BITS && clusterBits <= MAX_CLUSTER_BITS ? 2 ** clusterBits : V3_MIN_HEADER_BYTES;
  const cluster0 = new Uint8Array(Math.min(file.size, clusterBytes));
  await file.read(0, cluster0);
  return parseHeader(cluster0, file.size);
}

/**
 * Parses and validates the header in `cluster0` (the first cluster of the
 * file, or all of it if shorter). `fileBytes` is the file's size.
 */
export function parseHeader(cluster0: Uint8Array, fileBytes: number): Qcow2Header {
  if (cluster0.length < V2_HEADER_BYTES) {
    throw new FormatError(`qcow2 image is ${fileBytes} bytes: too short for a header`, 'header');
  }
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const magic = view.getUint32(HDR_MAGIC, false);
  if (magic !== QCOW2_MAGIC) throw new FormatError(`qcow2 magic is 0x${magic.toString(16)}, not 0x514649fb`, 'magic');
  const version = view.getUint32(HDR_VERSION, false);
  if (version !== VERSION_2 && version !== VERSION_3) {
    throw new FormatError(`Unsupported qcow2 version ${version} (expected 2 or 3)`, 'version');
  }
  const clusterBits = view.getUint32(HDR_CLUSTER_BITS, false);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new FormatError(`qcow2 cluster_bits is ${clusterBits} (expected ${MIN_CLUSTER_BITS} to ${MAX_CLUSTER_BITS})`, 'cluster_bits');
  }
  const clusterSize = 2 ** clusterBits;

  let headerLength = V2_HEADER_BYTES;
  let incompatible = 0;
  let incompatibleHi = 0;
  let compatible = 0;
  let compatibleHi = 0;
  let autoclear = 0;
  let autoclearHi = 0;
  let refcountOrder = 4;
  let compressionByte = COMPRESSION_ZLIB;
  if (version === VERSION_3) {
    if (cluster0.length < V3_MIN_HEADER_BYTES) {
      throw new FormatError(`qcow2 image is ${fileBytes} bytes: too short for a version 3 header`, 'header_length');
    }
    headerLength = view.getUint32(HDR_HEADER_LENGTH, false);
    if (headerLength < V3_MIN_HEADER_BYTES) {
      throw new FormatError(`qcow2 header_length is ${headerLength} (at least ${V3_MIN_HEADER_BYTES})`, 'header_length');
    }
    if (headerLength > clusterSize) {
      throw new FormatError(`qcow2 header_length is ${headerLength}, more than the cluster size ${clusterSize}`, 'header_length');
    }
    if (headerLength > cluster0.length) {
      throw new FormatError(`qcow2 header_length is ${headerLength}, past the end of the file (${fileBytes} bytes)`, 'header_length');
    }
    incompatibleHi = view.getUint32(HDR_INCOMPATIBLE_FEATURES, false);
    incompatible = view.getUint32(HDR_INCOMPATIBLE_FEATURES + 4, false);
    compatibleHi = view.getUint32(HDR_COMPATIBLE_FEATURES, false);
    compatible = view.getUint32(HDR_COMPATIBLE_FEATURES + 4, false);
    autoclearHi = view.getUint32(HDR_AUTOCLEAR_FEATURES, false);
    autoclear = view.getUint32(HDR_AUTOCLEAR_FEATURES + 4, false);
    refcountOrder = view.getUint32(HDR_REFCOUNT_ORDER, false);
    if (refcountOrder > MAX_REFCOUNT_ORDER) {
      throw new FormatError(`qcow2 refcount_order is ${refcountOrder} (expected 0 to ${MAX_REFCOUNT_ORDER})`, 'refcount_order');
    }
    if (headerLength > HDR_COMPRESSION_TYPE) compressionByte = cluster0[HDR_COMPRESSION_TYPE]!;
  }

  // Extensions first: the feature name table names any unknown bit we refuse.
  const backingFileOffset = getU64Checked(view, HDR_BACKING_FILE_OFFSET, 'backing_file_offset');
  const backingFileBytes = view.getUint32(HDR_BACKING_FILE_SIZE, false);
  const extEnd = backingFileOffset !== 0 ? backingFileOffset : clusterSize;
  const ext = parseExtensions(cluster0, headerLength, Math.min(extEnd, clusterSize));

  const header: Qcow2Header = {
    version: version as 2 | 3,
    backingFileOffset,
    backingFileBytes,
    clusterBits,
    clusterSize,
    virtualSize: 0,
    cryptMethod: view.getUint32(HDR_CRYPT_METHOD, false),
    l1Size: view.getUint32(HDR_L1_SIZE, false),
    l1TableOffset: 0,
    refcountTableOffset: 0,
    refcountTableClusters: view.getUint32(HDR_REFCOUNT_TABLE_CLUSTERS, false),
    nbSnapshots: view.getUint32(HDR_NB_SNAPSHOTS, false),
    snapshotsOffset: 0,
    incompatible,
    incompatibleHi,
    compatible,
    compatibleHi,
    autoclear,
    autoclearHi,
    refcountOrder,
    headerLength,
    compressionType: 'zlib',
    extendedL2: (incompatible & INCOMPAT_EXTL2) !== 0,
    l2EntryBytes: L2E_BYTES,
    l2Entries: 0,
    featureNames: ext.featureNames,
    unknownExtensions: ext.unknown,
    extensionsEnd: ext.end,
  };
  if (ext.backingFormat !== undefined) header.backingFormat = ext.backingFormat;
  if (ext.bitmaps && (autoclear & AUTOCLEAR_BITMAPS) !== 0) header.bitmaps = ext.bitmaps;

  // Incompatible features: refuse what we do not know, by name.
  const unknown = featureNames(header, 'incompatible', true);
  if (unknown.length > 0) {
    throw new FormatError(`Unsupported qcow2 feature(s): ${unknown.join(', ')}`, 'incompatible_features');
  }
  if (autoclear & AUTOCLEAR_DATA_FILE_RAW && !(incompatible & INCOMPAT_DATA_FILE)) {
    throw new FormatError('qcow2 autoclear bit data-file-raw is set without an external data file', 'autoclear_features');
  }
  if (incompatible & INCOMPAT_DATA_FILE) {
    throw new FormatError('Unsupported qcow2 feature(s): external data file', 'incompatible_features');
  }
  if (header.cryptMethod !== CRYPT_NONE) {
    throw new FormatError(`qcow2 crypt_method is ${header.cryptMethod}: encrypted images are not supported`, 'crypt_method');
  }
  if (header.extendedL2) {
    if (clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
      throw new FormatError(`qcow2 cluster_bits is ${clusterBits}: extended L2 entries need at least ${MIN_CLUSTER_BITS_EXTENDED_L2}`, 'cluster_bits');
    }
    header.l2EntryBytes = L2E_EXTENDED_BYTES;
  }
  header.l2Entries = clusterSize / header.l2EntryBytes;

  // Compression type.
  if (compressionByte !== COMPRESSION_ZLIB && !(incompatible & INCOMPAT_COMPRESSION)) {
    throw new FormatError(`qcow2 compression_type is ${compressionByte} but the compression type feature bit is clear`, 'compression_type');
  }
  if (compressionByte === COMPRESSION_ZLIB && incompatible & INCOMPAT_COMPRESSION) {
    throw new FormatError('qcow2 compression type feature bit is set with compression_type 0 (zlib)', 'compression_type');
  }
  const compressionType = COMPRESSION_NAMES[compressionByte];
  if (!compressionType) throw new FormatError(`Unknown qcow2 compression_type ${compressionByte}`, 'compression_type');
  header.compressionType = compressionType;

  // Sizes and table positions.
  // QEMU counts the virtual size in whole 512-byte sectors: a partial last sector is not part of the image.
  const rawSize = getU64Checked(view, HDR_SIZE, 'size', MAX_VIRTUAL_SIZE);
  header.virtualSize = rawSize - (rawSize % 512);
  const l2Coverage = header.l2Entries * clusterSize;
  const minL1 = Math.ceil(rawSize / l2Coverage);
  if (header.l1Size > MAX_L1_BYTES / L1E_BYTES) {
    throw new FormatError(`qcow2 l1_size is ${header.l1Size} entries: the active L1 table is too large`, 'l1_size');
  }
  if (header.l1Size < minL1) {
    throw new FormatError(`qcow2 l1_size is ${header.l1Size} entries, too small for the virtual size ${header.virtualSize} (needs ${minL1})`, 'l1_size');
  }
  header.l1TableOffset = tableOffset(view, HDR_L1_TABLE_OFFSET, 'l1_table_offset', clusterSize);
  checkTableOffset(header, 'l1_table_offset', header.l1TableOffset, header.l1Size * L1E_BYTES, true);
  header.refcountTableOffset = tableOffset(view, HDR_REFCOUNT_TABLE_OFFSET, 'refcount_table_offset', clusterSize);
  // No refcount table: readable (and checkable), never writable (Qcow2Image refuses a writable open).
  if (header.refcountTableClusters > MAX_REFTABLE_BYTES / clusterSize) {
    throw new FormatError(`qcow2 refcount_table_clusters is ${header.refcountTableClusters}: the refcount table is too large`, 'refcount_table_clusters');
  }
  checkTableOffset(header, 'refcount_table_offset', header.refcountTableOffset, header.refcountTableClusters * clusterSize, true);
  if (header.nbSnapshots > MAX_SNAPSHOTS) {
    throw new FormatError(`qcow2 nb_snapshots is ${header.nbSnapshots} (at most ${MAX_SNAPSHOTS})`, 'nb_snapshots');
  }
  header.snapshotsOffset = tableOffset(view, HDR_SNAPSHOTS_OFFSET, 'snapshots_offset', clusterSize);
  checkTableOffset(header, 'snapshots_offset', header.snapshotsOffset, header.nbSnapshots * 40, true);

  // The backing file name lives in the first cluster.
  if (backingFileOffset !== 0) {
    if (backingFileOffset > clusterSize) {
      throw new FormatError(`qcow2 backing_file_offset is ${backingFileOffset}, past the first cluster`, 'backing_file_offset');
    }
    if (backingFileBytes > Math.min(MAX_BACKING_FILE_NAME_BYTES, clusterSize - backingFileOffset)) {
      throw new FormatError(`qcow2 backing_file_size is ${backingFileBytes}: the backing file name is too long`, 'backing_file_size');
    }
    if (backingFileOffset + backingFileBytes > cluster0.length) {
      throw new FormatError(`qcow2 backing file name (${backingFileBytes} bytes at ${backingFileOffset}) is past the end of the file`, 'backing_file_offset');
    }
    if (backingFileBytes > 0) {
      header.backingFile = new TextDecoder('utf-8', { fatal: false }).decode(cluster0.subarray(backingFileOffset, backingFileOffset + backingFileBytes));
      if (header.backingFile.includes('\0')) {
        throw new FormatError('qcow2 backing file name contains a NUL byte', 'backing_file_offset');
      }
    }
  }
  if (version === VERSION_2 && refcountOrder !== 4) {
    throw new FormatError(`qcow2 version 2 refcount_order is ${refcountOrder} (must be 4)`, 'refcount_order');
  }
  return header;
}

/**
 * A table offset: cluster aligned (checked on the exact low bits) and below
 * 2^63 as QEMU requires. Past 2^53 it is kept approximately: it lies past
 * the end of any file, where reads give zeroes (as in QEMU).
 */
function tableOffset(view: DataView, at: number, field: string, clusterSize: number): number {
  const hi = view.getUint32(at, false);
  const lo = view.getUint32(at + 4, false);
  if (lo % clusterSize !== 0) {
    throw new FormatError(`qcow2 ${field} is ${bigU64(hi, lo)}: not aligned to the cluster size ${clusterSize}`, field);
  }
  if (hi >= 0x80000000) throw new FormatError(`qcow2 ${field} is ${bigU64(hi, lo)}: past 2^63`, field);
  return hi * 2 ** 32 + lo;
}

function checkTableOffset(_header: Qcow2Header, field: string, offset: number, bytes: number, _required: boolean): void {
  if (offset + bytes >= 2 ** 63) throw new FormatError(`qcow2 ${field} is ${offset}: the table ends past 2^63`, field);
}

// ---- building a header for a new image ---------------------------------------------

export interface NewHeader {
  version: 2 | 3;
  clusterBits: number;
  virtualSize: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  incompatible: number;
  compatible: number;
  compressionType: CompressionType;
  backingFile?: string;
  backingFormat?: string;
}

/** The first cluster of a new image: header, extensions, backing file name. */
export function buildHeader(h: NewHeader): Uint8Array {
  const clusterSize = 2 ** h.clusterBits;
  const out = new Uint8Array(clusterSize);
  const view = new DataView(out.buffer);
  const headerLength = h.version === VERSION_3 ? V3_HEADER_BYTES : V2_HEADER_BYTES;
  view.setUint32(HDR_MAGIC, QCOW2_MAGIC, false);
  view.setUint32(HDR_VERSION, h.version, false);
  view.setUint32(HDR_CLUSTER_BITS, h.clusterBits, false);
  setU64(view, HDR_SIZE, h.virtualSize);
  view.setUint32(HDR_CRYPT_METHOD, CRYPT_NONE, false);
  view.setUint32(HDR_L1_SIZE, h.l1Size, false);
  setU64(view, HDR_L1_TABLE_OFFSET, h.l1TableOffset);
  setU64(view, HDR_REFCOUNT_TABLE_OFFSET, h.refcountTableOffset);
  view.setUint32(HDR_REFCOUNT_TABLE_CLUSTERS, h.refcountTableClusters, false);
  if (h.version === VERSION_3) {
    setU64(view, HDR_INCOMPATIBLE_FEATURES, h.incompatible);
    setU64(view, HDR_COMPATIBLE_FEATURES, h.compatible);
    view.setUint32(HDR_REFCOUNT_ORDER, h.refcountOrder, false);
    view.setUint32(HDR_HEADER_LENGTH, headerLength, false);
    out[HDR_COMPRESSION_TYPE] = h.compressionType === 'zstd' ? 1 : 0;
  }
  let at = writeNewExtensions(out, headerLength, h.version, h.backingFormat);
  if (h.backingFile !== undefined) {
    const name = new TextEncoder().encode(h.backingFile);
    if (name.length === 0 || name.length > MAX_BACKING_FILE_NAME_BYTES) {
      throw new FormatError(`Backing file name is ${name.length} bytes (expected 1 to ${MAX_BACKING_FILE_NAME_BYTES})`, 'backing_file');
    }
    if (at + name.length > clusterSize) throw new FormatError(`Backing file name does not fit in the first cluster`, 'backing_file');
    setU64(view, HDR_BACKING_FILE_OFFSET, at);
    view.setUint32(HDR_BACKING_FILE_SIZE, name.length, false);
    out.set(name, at);
    at += name.length;
  }
  return out.subarray(0, Math.max(at, headerLength));
}

// ---- writing the fields of an open image ---------------------------------------------

/** Where header fields are written: the image file. Callers flush when the order needs it. */
export interface HeaderFile {
  write(offset: number, data: Uint8Array): Promise<void>;
}

/**
 * Sets (`on`) or clears incompatible feature `bit` (one of bits 0..31:
 * dirty, corrupt) in `header`, then writes the field (8 bytes at 72).
 */
export async function setIncompatibleFeature(file: HeaderFile, header: Qcow2Header, bit: number, on: boolean): Promise<void> {
  header.incompatible = (on ? header.incompatible | bit : header.incompatible & ~bit) >>> 0;
  const field = new Uint8Array(8);
  putU32(field, 0, header.incompatibleHi);
  putU32(field, 4, header.incompatible);
  await file.write(HDR_INCOMPATIBLE_FEATURES, field);
}

/**
 * Clears every autoclear feature bit in `header` and on disk (8 bytes at
 * 88): a writer that keeps no bitmaps up to date leaves them inconsistent,
 * as the spec wants.
 */
export async function clearAutoclearFeatures(file: HeaderFile, header: Qcow2Header): Promise<void> {
  header.autoclear = 0;
  header.autoclearHi = 0;
  delete header.bitmaps;
  await file.write(HDR_AUTOCLEAR_FEATURES, new Uint8Array(8));
}

/** Switches to the refcount table at `offset`, `clusters` long: offset and size (12 bytes at 48) in one write. */
export async function writeRefcountTableLocation(file: HeaderFile, offset: number, clusters: number): Promise<void> {
  const field = new Uint8Array(HDR_REFCOUNT_TABLE_CLUSTERS + 4 - HDR_REFCOUNT_TABLE_OFFSET);
  const view = new DataView(field.buffer);
  setU64(view, 0, offset);
  view.setUint32(HDR_REFCOUNT_TABLE_CLUSTERS - HDR_REFCOUNT_TABLE_OFFSET, clusters, false);
  await file.write(HDR_REFCOUNT_TABLE_OFFSET, field);
}
