/**
 * Creating a qcow2 image on an empty device: the options qemu-img takes
 * (compat, cluster_size, refcount_bits, extended_l2, compression_type,
 * lazy_refcounts, backing file and format, preallocation off|metadata).
 *
 * Layout: header, refcount table, refcount blocks, L1 table, then (with
 * metadata preallocation) the L2 tables and the data clusters they map.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { type FormatName, FormatError } from '../image-format.js';
import { putU32, setU64 } from './bytes.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  type CompressionType,
  DEFAULT_CLUSTER_BITS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTL2,
  L1E_BYTES,
  L2E_BYTES,
  L2E_EXTENDED_BYTES,
  MAX_CLUSTER_BITS,
  MAX_HOST_OFFSET,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_VIRTUAL_SIZE,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  REFT_ENTRY_BYTES,
  SUBCLUSTER_ALL,
  VERSION_2,
  VERSION_3,
} from './constants.js';
import { buildHeader } from './header.js';
import { makeEntry, writeL2Entry } from './l2-entry.js';
import { setRefcountEntry } from './refcount.js';

export type Preallocation = 'off' | 'metadata';

export interface Qcow2CreateOptions {
  /** Virtual size in bytes (a multiple of 512). */
  size: number;
  compat?: '0.10' | '1.1';
  clusterSize?: number;
  refcountBits?: number;
  extendedL2?: boolean;
  compressionType?: CompressionType;
  lazyRefcounts?: boolean;
  backingFile?: string;
  backingFormat?: FormatName;
  preallocation?: Preallocation;
}

interface Resolved {
  version: 2 | 3;
  clusterBits: number;
  refcountOrder: number;
  extendedL2: boolean;
  compressionType: CompressionType;
  lazyRefcounts: boolean;
  preallocation: Preallocation;
}

function log2Exact(n: number): number {
  const bits = Math.log2(n);
  return Number.isInteger(bits) ? bits : -1;
}

/** Checks the options the way qemu-img does, with its messages where it has them. */
export function resolveCreateOptions(o: Qcow2CreateOptions): Resolved {
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new FormatError(`Image size ${o.size} is not a non-negative integer`, 'size');
  if (o.size % 512 !== 0) throw new FormatError(`Image size must be a multiple of 512 bytes (got ${o.size})`, 'size');
  if (o.size > MAX_VIRTUAL_SIZE) throw new FormatError(`Image size ${o.size} is too large`, 'size');
  const compat = o.compat ?? '1.1';
  if (compat !== '0.10' && compat !== '1.1') throw new FormatError(`Invalid compat version '${String(compat)}' (expected 0.10 or 1.1)`, 'compat');
  const version = compat === '0.10' ? VERSION_2 : VERSION_3;
  const clusterSize = o.clusterSize ?? 2 ** DEFAULT_CLUSTER_BITS;
  const clusterBits = log2Exact(clusterSize);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new FormatError(`Cluster size must be a power of two between 512 and 2048k (got ${clusterSize})`, 'cluster_size');
  }
  const refcountBits = o.refcountBits ?? 16;
  const refcountOrder = log2Exact(refcountBits);
  if (refcountOrder < 0 || refcountOrder > 6) throw new FormatError(`Refcount width must be a power of two and may not exceed 64 bits (got ${refcountBits})`, 'refcount_bits');
  if (version === VERSION_2 && refcountBits !== 16) {
    throw new FormatError('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)', 'refcount_bits');
  }
  const extendedL2 = o.extendedL2 ?? false;
  if (extendedL2) {
    if (version === VERSION_2) throw new FormatError('Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)', 'extended_l2');
    if (clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) throw new FormatError('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes', 'extended_l2');
  }
  const compressionType = o.compressionType ?? 'zlib';
  if (compressionType !== 'zlib' && compressionType !== 'zstd') throw new FormatError(`Unknown compression type '${String(compressionType)}' (expected zlib or zstd)`, 'compression_type');
  if (compressionType !== 'zlib' && version === VERSION_2) {
    throw new FormatError('Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)', 'compression_type');
  }
  const lazyRefcounts = o.lazyRefcounts ?? false;
  if (lazyRefcounts && version === VERSION_2) {
    throw new FormatError('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)', 'lazy_refcounts');
  }
  const preallocation = o.preallocation ?? 'off';
  if (preallocation !== 'off' && preallocation !== 'metadata') {
    throw new FormatError(`Unsupported preallocation mode '${String(preallocation)}' (expected off or metadata)`, 'preallocation');
  }
  if (o.backingFormat !== undefined && o.backingFile === undefined) throw new FormatError('Backing format given without a backing file', 'backing_fmt');
  if (o.backingFile !== undefined && preallocation !== 'off') {
    throw new FormatError('Backing file and preallocation can only be used at the same time if extended_l2 is on', 'preallocation');
  }
  return { version, clusterBits, refcountOrder, extendedL2, compressionType, lazyRefcounts, preallocation };
}

/** Writes a new qcow2 image onto `file` (which should be empty; it is truncated first). */
export async function createQcow2(file: BlockDevice, o: Qcow2CreateOptions): Promise<void> {
  const r = resolveCreateOptions(o);
  const cs = 2 ** r.clusterBits;
  const l2EntryBytes = r.extendedL2 ? L2E_EXTENDED_BYTES : L2E_BYTES;
  const l2Entries = cs / l2EntryBytes;
  const l2Coverage = l2Entries * cs;
  const l1Size = Math.ceil(o.size / l2Coverage);
  if (l1Size * L1E_BYTES > MAX_L1_BYTES) throw new FormatError(`Image size ${o.size} is too large for cluster size ${cs}`, 'size');
  const l1Clusters = Math.max(1, Math.ceil((l1Size * L1E_BYTES) / cs));
  const prealloc = r.preallocation === 'metadata';
  const dataClusters = prealloc ? Math.ceil(o.size / cs) : 0;
  const l2Tables = prealloc ? l1Size : 0;
  const perBlock = (cs * 8) / 2 ** r.refcountOrder;
  const perTableCluster = cs / REFT_ENTRY_BYTES;
  // Refcount structures must count everything, themselves included.
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters + l2Tables + dataClusters;
    const needBlocks = Math.ceil(total / perBlock);
    const needTable = Math.max(1, Math.ceil(needBlocks / perTableCluster));
    if (needBlocks <= blocks && needTable <= tableClusters) break;
    blocks = Math.max(blocks, needBlocks);
    tableClusters = Math.max(tableClusters, needTable);
  }
  if (tableClusters * cs > MAX_REFTABLE_BYTES) throw new FormatError(`Image size ${o.size} needs too large a refcount table`, 'size');
  const tableAt = 1;
  const blocksAt = tableAt + tableClusters;
  const l1At = blocksAt + blocks;
  const l2At = l1At + l1Clusters;
  const dataAt = l2At + l2Tables;
  const endCluster = dataAt + dataClusters;
  if (endCluster * cs > MAX_HOST_OFFSET) throw new FormatError(`Image size ${o.size} is too large`, 'size');

  let incompatible = 0;
  if (r.compressionType === 'zstd') incompatible |= INCOMPAT_COMPRESSION;
  if (r.extendedL2) incompatible |= INCOMPAT_EXTL2;
  const header = buildHeader({
    version: r.version,
    clusterBits: r.clusterBits,
    virtualSize: o.size,
    l1Size,
    l1TableOffset: l1At * cs,
    refcountTableOffset: tableAt * cs,
    refcountTableClusters: tableClusters,
    refcountOrder: r.refcountOrder,
    incompatible,
    compatible: r.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0,
    compressionType: r.compressionType,
    ...(o.backingFile !== undefined ? { backingFile: o.backingFile } : {}),
    ...(o.backingFormat !== undefined ? { backingFormat: o.backingFormat } : {}),
  });

  if (file.size !== 0 && file.resize) await file.resize(0);
  // Header, then tables; the file ends at the last cluster the image uses.
  await file.write(0, header);
  const table = new Uint8Array(tableClusters * cs);
  const tv = new DataView(table.buffer);
  for (let b = 0; b < blocks; b++) setU64(tv, b * REFT_ENTRY_BYTES, (blocksAt + b) * cs);
  await file.write(tableAt * cs, table);
  for (let b = 0; b < blocks; b++) {
    const block = new Uint8Array(cs);
    const first = b * perBlock;
    const last = Math.min(endCluster, first + perBlock);
    for (let c = first; c < last; c++) setRefcountEntry(block, c - first, 2 ** r.refcountOrder, 1);
    await file.write((blocksAt + b) * cs, block);
  }
  const l1 = new Uint8Array(l1Clusters * cs);
  for (let i = 0; i < l2Tables; i++) {
    const [hi, lo] = makeEntry((l2At + i) * cs, true);
    putU32(l1, i * L1E_BYTES, hi);
    putU32(l1, i * L1E_BYTES + 4, lo);
  }
  await file.write(l1At * cs, l1);
  for (let i = 0; i < l2Tables; i++) {
    const l2 = new Uint8Array(cs);
    const firstData = i * l2Entries;
    const n = Math.min(l2Entries, dataClusters - firstData);
    for (let e = 0; e < n; e++) {
      const [hi, lo] = makeEntry((dataAt + firstData + e) * cs, true);
      // With extended L2, every subcluster allocated.
      writeL2Entry(l2, e, r.extendedL2, hi, lo, 0, SUBCLUSTER_ALL);
    }
    await file.write((l2At + i) * cs, l2);
  }
  if (file.resize) await file.resize(endCluster * cs);
  else if (file.size < endCluster * cs) throw new FormatError('the device cannot be resized to hold the image', 'size');
  await file.flush();
}
