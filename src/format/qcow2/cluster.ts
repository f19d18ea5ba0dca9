/**
 * The guest-to-host map (QEMU's qcow2-cluster.c): L1 in memory, L2 tables
 * through the bounded cache. Walking a guest range, allocating and copying
 * L2 tables, linking compressed clusters, zeroing and discarding clusters,
 * and the COPIED fixes of repair. Planning and linking ordinary writes is
 * in write-plan.ts, which uses the entry helpers below.
 *
 * Every function that changes metadata runs under the image's metadata
 * lock; data I/O happens outside it, between `prepareWrite` and `commitWrite`.
 */
import { FormatError } from '../image-format.js';
import { putU32, u32 } from './bytes.js';
import type { MetadataCache, MetadataIo } from './cache.js';
import {
  L1E_BYTES,
  OFFSET_MASK_HI,
  OFFSET_MASK_LO,
  OFLAG_ZERO_LO,
  SUBCLUSTER_ALL,
  SUBCLUSTERS_PER_CLUSTER,
  VERSION_3,
} from './constants.js';
import type { Qcow2Header } from './header.js';
import {
  type ClusterKind,
  type SubclusterKind,
  classifyL2,
  entryOffset,
  isCopied,
  makeCompressed,
  makeEntry,
  parseCompressed,
  readL2Entry,
  subclusterKind,
  subclusterMask,
  withCopied,
  writeL2Entry,
} from './l2-entry.js';
import type { Refcounts } from './refcount.js';

/** Visits a run of guest bytes of one kind; return false to stop the walk. */
export type Visitor = (guestOffset: number, bytes: number, kind: SubclusterKind, hostOffset: number, hi: number, lo: number) => boolean;

export interface MapOptions {
  header: Qcow2Header;
  io: MetadataIo;
  l2Cache: MetadataCache;
  l1: Uint32Array;
  hasBacking: () => boolean;
}

export class ClusterMap {
  readonly header: Qcow2Header;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly l2Entries: number;
  readonly l2EntryBytes: number;
  readonly extendedL2: boolean;
  readonly subclusterBytes: number;
  readonly l2Coverage: number;
  readonly io: MetadataIo;
  readonly l2Cache: MetadataCache;
  /** The active L1 table as hi/lo pairs. */
  readonly l1: Uint32Array;
  private readonly hasBacking: () => boolean;
  /** Set by the image for writes. */
  refcounts: Refcounts | null = null;
  /** Lazy refcounts: L2 updates need not wait for refcount updates. */
  lazyRefcounts = false;

  constructor(o: MapOptions) {
    this.header = o.header;
    this.clusterBits = o.header.clusterBits;
    this.clusterSize = o.header.clusterSize;
    this.l2Entries = o.header.l2Entries;
    this.l2EntryBytes = o.header.l2EntryBytes;
    this.extendedL2 = o.header.extendedL2;
    this.subclusterBytes = this.extendedL2 ? this.clusterSize / SUBCLUSTERS_PER_CLUSTER : this.clusterSize;
    this.l2Coverage = this.l2Entries * this.clusterSize;
    this.io = o.io;
    this.l2Cache = o.l2Cache;
    this.l1 = o.l1;
    this.hasBacking = o.hasBacking;
  }

  /** L2 table offset for L1 index `i` (0: none); validated. */
  l2Offset(i: number): number {
    if (i >= this.l1.length / 2) return 0;
    const hi = this.l1[i * 2]!;
    const lo = this.l1[i * 2 + 1]!;
    const offset = entryOffset(hi, lo);
    if (offset !== 0 && offset % this.clusterSize !== 0) {
      throw new FormatError(`qcow2 L2 table offset ${offset} is not aligned to the cluster size (L1 index ${i})`, 'l1_entry');
    }
    return offset;
  }

  l1Copied(i: number): boolean {
    return isCopied(this.l1[i * 2]!);
  }

  /** Checks a host cluster offset taken from an L2 entry. */
  checkHost(host: number, guestOffset: number): void {
    if (host % this.clusterSize !== 0) {
      throw new FormatError(`qcow2 cluster offset ${host} is not aligned to the cluster size (guest offset ${guestOffset})`, 'l2_entry');
    }
  }

  /**
   * Walks [offset, offset + bytes) in runs of one kind (at most one cluster
   * or subcluster run per call for allocated data, whole L2 ranges when
   * there is no L2 table), until `visit` returns false.
   */
  async walk(offset: number, bytes: number, visit: Visitor): Promise<void> {
    const end = offset + bytes;
    let pos = offset;
    while (pos < end) {
      const l1Index = Math.floor(pos / this.l2Coverage);
      const tableStart = l1Index * this.l2Coverage;
      const tableEnd = Math.min(end, tableStart + this.l2Coverage);
      const l2 = this.l2Offset(l1Index);
      if (l2 === 0) {
        if (!visit(pos, tableEnd - pos, 'unallocated-plain', 0, 0, 0)) return;
        pos = tableEnd;
        continue;
      }
      const table = this.l2Cache.peek(l2) ?? (await this.l2Cache.get(l2));
      if (!this.walkTable(table, tableStart, pos, tableEnd, visit)) return;
      pos = tableEnd;
    }
  }

  /** The synchronous part of `walk` over one L2 table; false when stopped. */
  private walkTable(table: Uint8Array, tableStart: number, pos: number, end: number, visit: Visitor): boolean {
    const cs = this.clusterSize;
    const eb = this.l2EntryBytes;
    const v2 = this.header.version !== VERSION_3;
    while (pos < end) {
      const index = Math.floor((pos - tableStart) / cs);
      const clusterStart = tableStart + index * cs;
      const clusterEnd = Math.min(end, clusterStart + cs);
      const at = index * eb;
      const hi = u32(table, at);
      const lo = u32(table, at + 4);
      if (!this.extendedL2 && hi === 0 && lo === 0) {
        // A run of empty entries is one visit: a sparse table costs a word compare per cluster, not a call.
        let i = index + 1;
        const last = Math.ceil((end - tableStart) / cs);
        while (i < last && table[i * eb]! === 0 && u32(table, i * eb) === 0 && u32(table, i * eb + 4) === 0) i++;
        const runEnd = Math.min(end, tableStart + i * cs);
        if (!visit(pos, runEnd - pos, 'unallocated-plain', 0, 0, 0)) return false;
        pos = runEnd;
        continue;
      }
      const kind = classifyL2(hi, lo, this.extendedL2);
      if (!this.extendedL2) {
        const sk = subclusterKind(kind, false, 0, 0, 0);
        let host = 0;
        if (kind === 'normal' || kind === 'zero-alloc') {
          host = entryOffset(hi, lo);
          this.checkHost(host, clusterStart);
        }
        if ((kind === 'zero-plain' || kind === 'zero-alloc') && v2) {
          throw new FormatError(`qcow2 zero cluster entry in a version 2 image (guest offset ${clusterStart})`, 'l2_entry');
        }
        if (!visit(pos, clusterEnd - pos, sk, host === 0 ? 0 : host + (pos - clusterStart), hi, lo)) return false;
        pos = clusterEnd;
        continue;
      }
      const bmHi = u32(table, at + 8);
      const bmLo = u32(table, at + 12);
      let host = 0;
      if (kind === 'normal') {
        host = entryOffset(hi, lo);
        this.checkHost(host, clusterStart);
      }
      // Runs of subclusters of one kind.
      while (pos < clusterEnd) {
        const sc = Math.floor((pos - clusterStart) / this.subclusterBytes);
        const sk = subclusterKind(kind, true, bmHi, bmLo, sc);
        if (sk === 'invalid') {
          throw new FormatError(
            `qcow2 extended L2 entry for guest offset ${clusterStart} has an invalid subcluster bitmap 0x${bmHi.toString(16).padStart(8, '0')}${bmLo.toString(16).padStart(8, '0')}`,
            'l2_bitmap',
          );
        }
        let next = sc + 1;
        if (sk !== 'compressed') {
          while (next < SUBCLUSTERS_PER_CLUSTER && subclusterKind(kind, true, bmHi, bmLo, next) === sk) next++;
        } else {
          next = SUBCLUSTERS_PER_CLUSTER;
        }
        const runEnd = Math.min(clusterEnd, clusterStart + next * this.subclusterBytes);
        if (!visit(pos, runEnd - pos, sk, host === 0 ? 0 : host + (pos - clusterStart), hi, lo)) return false;
        pos = runEnd;
      }
    }
    return true;
  }

  // ---- writing: L2 tables ------------------------------------------------------------

  /** Writes L1 entry `i` (8 bytes on disk, flushed), and keeps it in memory. */
  private async setL1(i: number, offset: number, copied: boolean): Promise<void> {
    const [hi, lo] = offset === 0 ? [0, 0] : makeEntry(offset, copied);
    const raw = new Uint8Array(L1E_BYTES);
    putU32(raw, 0, hi);
    putU32(raw, 4, lo);
    await this.io.write(this.header.l1TableOffset + i * L1E_BYTES, raw);
    await this.io.flush();
    this.l1[i * 2] = hi;
    this.l1[i * 2 + 1] = lo;
    this.l2Clusters = null;
  }

  /** Sets or clears COPIED in L1 entry `i` (repair: the flag follows the refcount), written through as `setL1` writes. */
  async setL1Copied(i: number, copied: boolean): Promise<void> {
    await this.setL1(i, this.l2Offset(i), copied);
  }

  /** Sets or clears COPIED in entry `index` of the L2 table at `l2Offset` (repair), through the cache. */
  async setL2Copied(l2Offset: number, index: number, copied: boolean): Promise<void> {
    const table = await this.l2Cache.get(l2Offset);
    const [hi, lo, bmHi, bmLo] = this.readEntry(table, index);
    this.putEntry(table, index, withCopied(hi, copied), lo, bmHi, bmLo);
    this.l2Cache.markDirty(l2Offset);
  }

  /** Clusters holding active L2 tables (built on first use). */
  private l2Clusters: Set<number> | null = null;

  /** Whether an active L2 table lies in clusters [first, first + count). */
  hasL2In(first: number, count: number): boolean {
    if (!this.l2Clusters) {
      this.l2Clusters = new Set();
      for (let i = 0; i < this.l1.length / 2; i++) {
        const offset = entryOffset(this.l1[i * 2]!, this.l1[i * 2 + 1]!);
        if (offset !== 0) this.l2Clusters.add(Math.floor(offset / this.clusterSize));
      }
    }
    for (let c = first; c < first + count; c++) if (this.l2Clusters.has(c)) return true;
    return false;
  }

  /**
   * The L2 table for L1 index `i`, ready to change: allocated if missing,
   * copied if shared (the L1 entry lacks COPIED). QEMU's order: refcount
   * of the new cluster durable, table written and flushed, then the L1
   * entry; a copied table's old cluster is freed last.
   */
  async writableL2(i: number): Promise<number> {
    const old = this.l2Offset(i);
    if (old !== 0 && this.l1Copied(i)) return old;
    const refcounts = this.mustRefcounts();
    const copy = old !== 0 ? (await this.l2Cache.get(old)).slice() : new Uint8Array(this.clusterSize);
    const index = await refcounts.allocate(1);
    const offset = index * this.clusterSize;
    await refcounts.flush();
    await this.io.write(offset, copy);
    await this.io.flush();
    await this.l2Cache.install(offset, copy, false);
    await this.setL1(i, offset, true);
    if (old !== 0) {
      await refcounts.cache.dependOn(this.l2Cache);
      await refcounts.free(old / this.clusterSize, 1);
      if ((await refcounts.get(old / this.clusterSize)) === 0) this.l2Cache.forget(old);
    }
    return offset;
  }

  /** The refcounts, which only a writable image has. */
  mustRefcounts(): Refcounts {
    if (!this.refcounts) throw new FormatError('internal: the image was not opened for writing');
    return this.refcounts;
  }

  /** Stores entry `index` of an L2 table (the caller marks the table dirty). */
  putEntry(table: Uint8Array, index: number, hi: number, lo: number, bmHi: number, bmLo: number): void {
    writeL2Entry(table, index, this.extendedL2, hi, lo, bmHi, bmLo);
  }

  /** Drops the reference an old entry held (QEMU's qcow2_free_any_cluster). */
  async freeEntry(hi: number, lo: number): Promise<void> {
    const refcounts = this.mustRefcounts();
    const kind = classifyL2(hi, lo, this.extendedL2);
    if (kind === 'compressed') {
      const d = parseCompressed(hi, lo, this.clusterBits);
      await refcounts.freeBytes(d.hostOffset, d.bytes);
    } else if (kind === 'normal' || kind === 'zero-alloc') {
      const host = entryOffset(hi, lo);
      if (host % this.clusterSize !== 0) throw new FormatError(`qcow2 cluster offset ${host} is not aligned to the cluster size`, 'l2_entry');
      await refcounts.free(host / this.clusterSize, 1);
    }
  }

  // ---- compressed writes -----------------------------------------------------------------

  /** Whether the cluster at `guestOffset` can take a compressed write (it has no host cluster). */
  async canCompress(guestOffset: number): Promise<boolean> {
    const l1Index = Math.floor(guestOffset / this.l2Coverage);
    const l2 = this.l2Offset(l1Index);
    if (l2 === 0) return true;
    const table = await this.l2Cache.get(l2);
    const [hi, lo] = readL2Entry(table, (guestOffset - l1Index * this.l2Coverage) / this.clusterSize, this.extendedL2);
    return (hi & OFFSET_MASK_HI) === 0 && (lo & OFFSET_MASK_LO) === 0 && classifyL2(hi, lo, this.extendedL2) !== 'compressed';
  }

  /** Links a compressed cluster written at `hostOffset` (`bytes` long) for the cluster at `guestOffset`. */
  async linkCompressed(guestOffset: number, hostOffset: number, bytes: number): Promise<void> {
    const refcounts = this.mustRefcounts();
    const l1Index = Math.floor(guestOffset / this.l2Coverage);
    const l2 = await this.writableL2(l1Index);
    if (!this.lazyRefcounts) await this.l2Cache.dependOn(refcounts.cache);
    const table = await this.l2Cache.get(l2);
    const index = (guestOffset - l1Index * this.l2Coverage) / this.clusterSize;
    const [hi, lo] = makeCompressed(hostOffset, bytes, this.clusterBits);
    this.putEntry(table, index, hi, lo, 0, 0);
    this.l2Cache.markDirty(l2);
  }

  // ---- zeroing and discarding whole clusters -------------------------------------------------

  /**
   * Makes whole clusters [first, first + count) read as zeroes (v3 zero flag,
   * or all subcluster zero bits), as QEMU's zero_in_l2_slice; with `unmap`
   * their host clusters are freed. All within one L2 table.
   */
  async zeroClusters(first: number, count: number, unmap: boolean): Promise<void> {
    await this.changeClusters(first, count, (hi, lo, bmHi, bmLo, kind) => {
      const unmapIt = kind === 'compressed' || (unmap && (kind === 'normal' || kind === 'zero-alloc'));
      let nhi = unmapIt ? 0 : hi;
      let nlo = unmapIt ? 0 : lo;
      let nbHi = bmHi;
      let nbLo = bmLo;
      if (this.extendedL2) {
        nbHi = SUBCLUSTER_ALL;
        nbLo = 0;
      } else {
        nlo = (nlo | OFLAG_ZERO_LO) >>> 0;
      }
      return [nhi, nlo, nbHi, nbLo, unmapIt];
    }, !this.hasBacking());
  }

  /** Discards whole clusters as QEMU's discard_in_l2_slice (not a full discard). */
  async discardClusters(first: number, count: number): Promise<void> {
    const v3 = this.header.version === VERSION_3;
    await this.changeClusters(first, count, (hi, lo, bmHi, bmLo, kind) => {
      const allocated = kind === 'normal' || kind === 'zero-alloc' || kind === 'compressed';
      if (!(this.hasBacking() || allocated)) return [hi, lo, bmHi, bmLo, false];
      if (this.extendedL2) return [0, 0, SUBCLUSTER_ALL, 0, allocated];
      return [0, v3 ? OFLAG_ZERO_LO : 0, 0, 0, allocated];
    }, !this.hasBacking());
  }

  /** A full discard of whole clusters: they read from the backing image again. */
  async fullDiscardClusters(first: number, count: number): Promise<void> {
    await this.changeClusters(first, count, (_hi, _lo, _bmHi, _bmLo, kind) => {
      const allocated = kind === 'normal' || kind === 'zero-alloc' || kind === 'compressed';
      return [0, 0, 0, 0, allocated];
    }, true);
  }

  /**
   * Subclusters [s0, s1) of the cluster at `guestOffset` read from the
   * backing image again (extended L2): both bits cleared. False if the
   * cluster is compressed (the caller copies instead).
   */
  async unallocateSubclusters(guestOffset: number, s0: number, s1: number): Promise<boolean> {
    const l1Index = Math.floor(guestOffset / this.l2Coverage);
    const index = (guestOffset - l1Index * this.l2Coverage) / this.clusterSize;
    let l2 = this.l2Offset(l1Index);
    if (l2 === 0) return true; // nothing allocated: it reads from the backing image already
    const before = await this.l2Cache.get(l2);
    const [hi0, lo0] = this.readEntry(before, index);
    if (classifyL2(hi0, lo0, true) === 'compressed') return false;
    l2 = await this.writableL2(l1Index);
    const table = await this.l2Cache.get(l2);
    const [hi, lo, bmHi, bmLo] = this.readEntry(table, index);
    if (classifyL2(hi, lo, true) === 'compressed') return false;
    const mask = subclusterMask(s0, s1);
    this.putEntry(table, index, hi, lo, (bmHi & ~mask) >>> 0, (bmLo & ~mask) >>> 0);
    this.l2Cache.markDirty(l2);
    return true;
  }

  /** Deallocates whole clusters (v2 without a backing file: they read as zeroes). */
  async deallocateClusters(first: number, count: number): Promise<void> {
    await this.changeClusters(first, count, (_hi, _lo, _bmHi, _bmLo, kind) => {
      const allocated = kind === 'normal' || kind === 'zero-alloc' || kind === 'compressed';
      return [0, 0, 0, 0, allocated];
    }, true);
  }

  /**
   * Applies `change` to the entries of clusters [first, first + count) in
   * one L2 table; entries first, then refcounts of dropped clusters.
   */
  private async changeClusters(
    first: number,
    count: number,
    change: (hi: number, lo: number, bmHi: number, bmLo: number, kind: ClusterKind) => [number, number, number, number, boolean],
    skipMissingTable: boolean,
  ): Promise<void> {
    const l1Index = Math.floor(first / this.l2Entries);
    const base = first - l1Index * this.l2Entries;
    let l2 = this.l2Offset(l1Index);
    if (l2 === 0 && skipMissingTable) return; // all unallocated: nothing to change
    // A read-only pass first: no table is allocated or copied for nothing.
    if (l2 !== 0) {
      const table = await this.l2Cache.get(l2);
      let any = false;
      for (let i = 0; i < count && !any; i++) {
        const [hi, lo, bmHi, bmLo] = this.readEntry(table, base + i);
        const kind = classifyL2(hi, lo, this.extendedL2);
        this.checkEntry(kind, hi, lo, (first + i) * this.clusterSize);
        const [nhi, nlo, nbHi, nbLo] = change(hi, lo, bmHi, bmLo, kind);
        any = nhi !== hi || nlo !== lo || nbHi !== bmHi || nbLo !== bmLo;
      }
      if (!any) return;
    }
    l2 = await this.writableL2(l1Index);
    const table = await this.l2Cache.get(l2);
    const frees: Array<[number, number]> = [];
    let dirty = false;
    for (let i = 0; i < count; i++) {
      const [hi, lo, bmHi, bmLo] = this.readEntry(table, base + i);
      const kind = classifyL2(hi, lo, this.extendedL2);
      const [nhi, nlo, nbHi, nbLo, drop] = change(hi, lo, bmHi, bmLo, kind);
      if (nhi === hi && nlo === lo && nbHi === bmHi && nbLo === bmLo) continue;
      this.putEntry(table, base + i, nhi, nlo, nbHi, nbLo);
      dirty = true;
      if (drop) frees.push([hi, lo]);
    }
    if (dirty) this.l2Cache.markDirty(l2);
    if (frees.length > 0) {
      const refcounts = this.mustRefcounts();
      await refcounts.cache.dependOn(this.l2Cache);
      for (const [hi, lo] of frees) await this.freeEntry(hi, lo);
    }
  }

  /**
   * Sets the zero bits (and clears allocation bits) of subclusters
   * [s0, s1) of the cluster at `guestOffset` (extended L2 only). Returns
   * false if the cluster is compressed (the caller writes zeroes instead).
   */
  async zeroSubclusters(guestOffset: number, s0: number, s1: number): Promise<boolean> {
    const l1Index = Math.floor(guestOffset / this.l2Coverage);
    const index = (guestOffset - l1Index * this.l2Coverage) / this.clusterSize;
    let l2 = this.l2Offset(l1Index);
    if (l2 !== 0) {
      const table = await this.l2Cache.get(l2);
      const [hi, lo] = this.readEntry(table, index);
      if (classifyL2(hi, lo, true) === 'compressed') return false;
    }
    l2 = await this.writableL2(l1Index);
    const table = await this.l2Cache.get(l2);
    const [hi, lo, bmHi, bmLo] = this.readEntry(table, index);
    const kind = classifyL2(hi, lo, true);
    if (kind === 'compressed') return false;
    const mask = subclusterMask(s0, s1);
    this.putEntry(table, index, hi, lo, (bmHi | mask) >>> 0, (bmLo & ~mask) >>> 0);
    this.l2Cache.markDirty(l2);
    return true;
  }

  private readEntry(table: Uint8Array, index: number): [number, number, number, number] {
    return readL2Entry(table, index, this.extendedL2);
  }

  private checkEntry(kind: ClusterKind, hi: number, lo: number, guestOffset: number): void {
    if (kind === 'normal' || kind === 'zero-alloc') this.checkHost(entryOffset(hi, lo), guestOffset);
  }
}
