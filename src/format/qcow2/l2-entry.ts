/**
 * L1 and L2 entries as pure functions: classification (one function, as
 * QEMU's qcow2_get_cluster_type / qcow2_get_subcluster_type), host offsets
 * and compressed descriptors, and entries read from and stored into their
 * tables. Entries are passed as two 32-bit halves (hi = bits 32..63, lo =
 * bits 0..31), see constants.ts.
 */
import { putU32, u32 } from './bytes.js';
import {
  COMPRESSED_SECTOR_BYTES,
  L2E_BYTES,
  L2E_EXTENDED_BYTES,
  OFFSET_MASK_HI,
  OFFSET_MASK_LO,
  OFLAG_COMPRESSED_HI,
  OFLAG_COPIED_HI,
  OFLAG_ZERO_LO,
  SUBCLUSTERS_PER_CLUSTER,
} from './constants.js';

export type ClusterKind = 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed';

/** Classifies a standard or extended L2 entry (extended entries have no cluster-level zero flag). */
export function classifyL2(hi: number, lo: number, extendedL2: boolean): ClusterKind {
  if (hi & OFLAG_COMPRESSED_HI) return 'compressed';
  const hasOffset = (hi & OFFSET_MASK_HI) !== 0 || (lo & OFFSET_MASK_LO) !== 0;
  if (!extendedL2 && lo & OFLAG_ZERO_LO) return hasOffset ? 'zero-alloc' : 'zero-plain';
  return hasOffset ? 'normal' : 'unallocated';
}

/**
 * What one subcluster (or, without extended L2, the whole cluster) holds.
 * `unallocated-alloc`: the cluster has a host cluster but this subcluster
 * reads from the backing image. `invalid`: a bitmap no writer produces.
 */
export type SubclusterKind =
  | 'unallocated-plain'
  | 'unallocated-alloc'
  | 'zero-plain'
  | 'zero-alloc'
  | 'normal'
  | 'compressed'
  | 'invalid';

/**
 * The kind of subcluster `index` of an entry. `bmHi` holds the zero bits,
 * `bmLo` the allocation bits (only with extended L2).
 */
export function subclusterKind(kind: ClusterKind, extendedL2: boolean, bmHi: number, bmLo: number, index: number): SubclusterKind {
  if (!extendedL2) {
    return kind === 'unallocated' ? 'unallocated-plain' : kind;
  }
  switch (kind) {
    case 'compressed':
      return 'compressed';
    case 'normal':
      if ((bmHi & bmLo) !== 0) return 'invalid';
      if ((bmHi >>> index) & 1) return 'zero-alloc';
      if ((bmLo >>> index) & 1) return 'normal';
      return 'unallocated-alloc';
    default:
      if (bmLo !== 0) return 'invalid';
      return (bmHi >>> index) & 1 ? 'zero-plain' : 'unallocated-plain';
  }
}

/** Bits 9..55: the host cluster offset of an L1 entry or standard L2 entry. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_MASK_HI) * 2 ** 32 + ((lo & OFFSET_MASK_LO) >>> 0);
}

export function isCopied(hi: number): boolean {
  return (hi & OFLAG_COPIED_HI) !== 0;
}

/** The hi half with COPIED set or cleared. */
export function withCopied(hi: number, copied: boolean): number {
  return (copied ? hi | OFLAG_COPIED_HI : hi & ~OFLAG_COPIED_HI) >>> 0;
}

/** An offset (cluster aligned, < 2^56) with flags, as hi/lo halves. */
export function makeEntry(offset: number, copied: boolean): [number, number] {
  const hi = (Math.floor(offset / 2 ** 32) & OFFSET_MASK_HI) | (copied ? OFLAG_COPIED_HI : 0);
  const lo = offset >>> 0;
  return [hi >>> 0, lo];
}

export interface CompressedDescriptor {
  /** Host byte offset where the compressed data starts (not aligned). */
  hostOffset: number;
  /** Bytes to read: up to the end of the last 512-byte sector. */
  bytes: number;
}

/**
 * The compressed descriptor: with x = 62 - (cluster_bits - 8), bits 0..x-1
 * are the host byte offset and bits x..61 the number of additional sectors.
 */
export function parseCompressed(hi: number, lo: number, clusterBits: number): CompressedDescriptor {
  const x = 62 - (clusterBits - 8);
  // Bits 0..61 as a number: x is at least 49, so the offset part needs care above 2^32.
  const hi30 = hi & 0x3fffffff;
  const offsetHiBits = x - 32; // bits of the offset that live in `hi`
  const offHi = hi30 & ((1 << offsetHiBits) - 1);
  const hostOffset = offHi * 2 ** 32 + lo;
  const sectors = (hi30 >>> offsetHiBits) & ((1 << (clusterBits - 8)) - 1);
  const bytes = (sectors + 1) * COMPRESSED_SECTOR_BYTES - (hostOffset % COMPRESSED_SECTOR_BYTES);
  return { hostOffset, bytes };
}

/** A compressed entry for `bytes` of data at `hostOffset` (COPIED is never set). */
export function makeCompressed(hostOffset: number, bytes: number, clusterBits: number): [number, number] {
  const x = 62 - (clusterBits - 8);
  const extraSectors =
    Math.floor((hostOffset + bytes - 1) / COMPRESSED_SECTOR_BYTES) - Math.floor(hostOffset / COMPRESSED_SECTOR_BYTES);
  const offsetHiBits = x - 32;
  const hi = (OFLAG_COMPRESSED_HI | (extraSectors << offsetHiBits) | Math.floor(hostOffset / 2 ** 32)) >>> 0;
  return [hi, hostOffset >>> 0];
}

/** Subclusters [first, end) as a 32-bit mask. */
export function subclusterMask(first: number, end: number): number {
  if (end <= first) return 0;
  const n = end - first;
  return (n >= SUBCLUSTERS_PER_CLUSTER ? 0xffffffff : ((1 << n) - 1) << first) >>> 0;
}

// ---- entries in their tables -------------------------------------------------------------

/** Decodes an L1 table as read from disk into hi/lo pairs (entry i at 2i, 2i + 1). */
export function parseL1(raw: Uint8Array): Uint32Array {
  const out = new Uint32Array(raw.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = u32(raw, i * 4);
  return out;
}

/** Entry `index` of an L2 table: hi, lo and (extended L2) the bitmap's halves, else zeroes. */
export function readL2Entry(table: Uint8Array, index: number, extendedL2: boolean): [number, number, number, number] {
  const at = index * (extendedL2 ? L2E_EXTENDED_BYTES : L2E_BYTES);
  return [u32(table, at), u32(table, at + 4), extendedL2 ? u32(table, at + 8) : 0, extendedL2 ? u32(table, at + 12) : 0];
}

/** Stores entry `index` of an L2 table (the bitmap only with extended L2). */
export function writeL2Entry(table: Uint8Array, index: number, extendedL2: boolean, hi: number, lo: number, bmHi: number, bmLo: number): void {
  const at = index * (extendedL2 ? L2E_EXTENDED_BYTES : L2E_BYTES);
  putU32(table, at, hi);
  putU32(table, at + 4, lo);
  if (extendedL2) {
    putU32(table, at + 8, bmHi);
    putU32(table, at + 12, bmLo);
  }
}
