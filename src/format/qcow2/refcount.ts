/**
 * Refcounts (QEMU's qcow2-refcount.c): reading every width from 1 to 64
 * bits, cluster allocation, refcount blocks created on demand, and growing
 * the refcount table.
 *
 * Ordering: a new refcount block is written and flushed before the table
 * entry that points at it; a grown table (with the blocks that count it) is
 * written and flushed before the header switches to it, and the old table
 * is freed only after that.
 */
import { FormatError } from '../image-format.js';
import { putU32, setU64, u32 } from './bytes.js';
import { MetadataCache, type MetadataIo } from './cache.js';
import { MAX_HOST_OFFSET, MAX_REFTABLE_BYTES, REFT_ENTRY_BYTES, REFT_RESERVED_LO } from './constants.js';
import { writeRefcountTableLocation } from './header.js';

/** Reads entry `i` of a refcount block of `bits`-wide entries. */
export function getRefcountEntry(block: Uint8Array, i: number, bits: number): number {
  switch (bits) {
    case 1:
    case 2:
    case 4: {
      const bit = i * bits;
      return (block[bit >>> 3]! >>> (bit & 7)) & ((1 << bits) - 1);
    }
    case 8:
      return block[i]!;
    case 16:
      return (block[i * 2]! << 8) | block[i * 2 + 1]!;
    case 32:
      return u32(block, i * 4);
    default:
      return u32(block, i * 8) * 2 ** 32 + u32(block, i * 8 + 4);
  }
}

export function setRefcountEntry(block: Uint8Array, i: number, bits: number, value: number): void {
  switch (bits) {
    case 1:
    case 2:
    case 4: {
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      const at = bit >>> 3;
      block[at] = (block[at]! & ~mask) | ((value << (bit & 7)) & mask);
      return;
    }
    case 8:
      block[i] = value;
      return;
    case 16:
      block[i * 2] = value >>> 8;
      block[i * 2 + 1] = value;
      return;
    case 32:
      putU32(block, i * 4, value);
      return;
    default:
      putU32(block, i * 8, Math.floor(value / 2 ** 32));
      putU32(block, i * 8 + 4, value >>> 0);
  }
}

/** What refcount handling needs from the image. */
export interface RefcountHost extends MetadataIo {
  /** Current size of the image file. */
  fileBytes(): number;
  /** Called before any metadata change (first write of a session: dirty bit, autoclear). */
  beforeMetadataWrite(): Promise<void>;
  /**
   * Called with clusters about to be allocated: throws if they hold
   * metadata (refcounts that say otherwise mean corruption).
   */
  checkFree(first: number, count: number): Promise<void>;
  /** Called once the header points at a new refcount table (the open image's header must say so too). */
  tableMoved(offset: number, clusters: number): void;
}

export interface RefcountParams {
  clusterBits: number;
  refcountOrder: number;
  tableOffset: number;
  tableClusters: number;
  /** Most refcount blocks cached. */
  cacheEntries: number;
}

export class Refcounts {
  readonly bits: number;
  readonly maxRefcount: number;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** Refcount entries per block, and its log2. */
  readonly perBlock: number;
  readonly perBlockBits: number;
  readonly cache: MetadataCache;
  tableOffset: number;
  tableClusters: number;
  /** Block offsets (0: no block). */
  table: Float64Array;
  /** Where the search for free clusters starts (QEMU's free_cluster_index). */
  private freeHint = 0;
  /** One past the highest cluster allocated this session. */
  private highWater = 0;
  /** QEMU's free_byte_offset: where the next compressed cluster may go (0: none). */
  private freeByteOffset = 0;

  constructor(
    private readonly host: RefcountHost,
    params: RefcountParams,
    table: Float64Array,
  ) {
    this.bits = 1 << params.refcountOrder;
    this.maxRefcount = this.bits === 64 ? Number.MAX_SAFE_INTEGER : 2 ** this.bits - 1;
    this.clusterBits = params.clusterBits;
    this.clusterSize = 2 ** params.clusterBits;
    this.perBlockBits = params.clusterBits + 3 - params.refcountOrder;
    this.perBlock = 2 ** this.perBlockBits;
    this.tableOffset = params.tableOffset;
    this.tableClusters = params.tableClusters;
    this.table = table;
    this.cache = new MetadataCache(host, 'refcount block', this.clusterSize, Math.max(4, params.cacheEntries));
  }

  /** Reads and validates the refcount table. */
  static async load(host: RefcountHost, params: RefcountParams): Promise<Refcounts> {
    const clusterSize = 2 ** params.clusterBits;
    const bytes = params.tableClusters * clusterSize;
    const raw = new Uint8Array(bytes);
    await host.read(params.tableOffset, raw);
    const view = new DataView(raw.buffer);
    const entries = bytes / REFT_ENTRY_BYTES;
    const table = new Float64Array(entries);
    for (let i = 0; i < entries; i++) {
      const hi = view.getUint32(i * 8, false);
      const lo = view.getUint32(i * 8 + 4, false);
      if (hi === 0 && lo === 0) continue;
      const offset = hi * 2 ** 32 + ((lo & ~REFT_RESERVED_LO) >>> 0);
      table[i] = offset;
      // Bad entries are reported by check and refused on use (QEMU does the same).
      if (offset % clusterSize !== 0 || lo & REFT_RESERVED_LO || offset >= MAX_HOST_OFFSET) table[i] = -offset - 1;
    }
    return new Refcounts(host, params, table);
  }

  get tableEntries(): number {
    return this.table.length;
  }

  /** The block offset for table index `t` (0: none); throws if the entry is corrupt. */
  blockOffset(t: number): number {
    if (t >= this.table.length) return 0;
    const v = this.table[t]!;
    if (v < 0) {
      throw new FormatError(`qcow2 refcount table entry ${t} is ${-v - 1}: not aligned to the cluster size, or too large`, 'refcount_table');
    }
    if (v !== 0 && v + this.clusterSize > Math.max(this.host.fileBytes(), this.highWater * this.clusterSize)) {
      throw new FormatError(`qcow2 refcount block ${t} at ${v} is past the end of the file (${this.host.fileBytes()} bytes)`, 'refcount_table');
    }
    if (v !== 0 && v < this.clusterSize) {
      throw new FormatError(`qcow2 refcount table entry ${t} points at the header (offset ${v})`, 'refcount_table');
    }
    return v;
  }

  /** Refcount of cluster `index`. */
  async get(index: number): Promise<number> {
    const t = Math.floor(index / this.perBlock);
    const block = this.blockOffset(t);
    if (block === 0) return 0;
    const data = await this.cache.get(block);
    return getRefcountEntry(data, index - t * this.perBlock, this.bits);
  }

  /** Adds `delta` (+1 or -1, or more) to the refcount of clusters [first, first + count). Every block must exist for increments. */
  async update(first: number, count: number, delta: number): Promise<void> {
    let index = first;
    const end = first + count;
    while (index < end) {
      const t = Math.floor(index / this.perBlock);
      const blockEnd = Math.min(end, (t + 1) * this.perBlock);
      const block = this.blockOffset(t);
      if (block === 0) {
        if (delta > 0) throw new FormatError(`internal: no refcount block for cluster ${index}`);
        throw new FormatError(`qcow2 refcount of cluster ${index} would drop below zero (no refcount block)`, 'refcount');
      }
      const data = await this.cache.get(block);
      const base = t * this.perBlock;
      for (let i = index; i < blockEnd; i++) {
        const old = getRefcountEntry(data, i - base, this.bits);
        const value = old + delta;
        if (value < 0) throw new FormatError(`qcow2 refcount of cluster ${i} would drop below zero`, 'refcount');
        if (value > this.maxRefcount) throw new FormatError(`qcow2 refcount of cluster ${i} would overflow ${this.bits} bits`, 'refcount');
        setRefcountEntry(data, i - base, this.bits, value);
        if (value === 0 && i < this.freeHint) this.freeHint = i;
        // The cluster compressed data was being packed into is free now: it may be handed out for other
        // data, so nothing more is packed there.
        if (value === 0 && this.freeByteOffset !== 0 && Math.floor(this.freeByteOffset / this.clusterSize) === i) this.freeByteOffset = 0;
      }
      this.cache.markDirty(block);
      index = blockEnd;
    }
  }

  /** Sets one refcount (used by repair); the block must exist. */
  async set(index: number, value: number): Promise<void> {
    const t = Math.floor(index / this.perBlock);
    const block = this.blockOffset(t);
    if (block === 0) throw new FormatError(`internal: no refcount block for cluster ${index}`);
    const data = await this.cache.get(block);
    setRefcountEntry(data, index - t * this.perBlock, this.bits, value);
    this.cache.markDirty(block);
  }

  /**
   * Allocates `count` contiguous clusters (refcount 1 each) and returns the
   * first one's index. Refcount blocks and table growth happen on the way.
   */
  async allocate(count: number): Promise<number> {
    await this.host.beforeMetadataWrite();
    for (let attempt = 0; ; attempt++) {
      if (attempt > 1024) throw new FormatError('internal: cluster allocation does not settle');
      const first = await this.findFree(count, this.freeHint);
      if (await this.ensureBlocks(first, count)) continue; // structure changed: search again
      await this.host.checkFree(first, count);
      await this.update(first, count, 1);
      this.freeHint = first + count;
      this.highWater = Math.max(this.highWater, first + count);
      return first;
    }
  }

  /**
   * Allocates `bytes` (at most a cluster) for compressed data, packing them
   * after the previous compressed cluster when they fit (QEMU's
   * qcow2_alloc_bytes). Each cluster the range touches gets one more reference.
   */
  async allocateBytes(bytes: number): Promise<number> {
    await this.host.beforeMetadataWrite();
    for (let attempt = 0; ; attempt++) {
      if (attempt > 64) throw new FormatError('internal: byte allocation does not settle');
      let offset = this.freeByteOffset;
      if (offset !== 0) {
        // Packed on only while the cluster is still ours (not freed meanwhile) and can take one more reference.
        const refs = await this.get(Math.floor(offset / this.clusterSize));
        if (refs === 0 || refs >= this.maxRefcount) offset = 0;
      }
      let first: number;
      let count: number;
      let fresh = -1;
      if (offset !== 0 && this.clusterSize - (offset % this.clusterSize) >= bytes) {
        first = Math.floor(offset / this.clusterSize);
        count = 1;
      } else {
        fresh = await this.findFree(1, this.freeHint);
        if (await this.ensureBlocks(fresh, 1)) continue; // structure changed: search again
        await this.host.checkFree(fresh, 1);
        if (offset !== 0 && fresh === Math.ceil(offset / this.clusterSize)) {
          // The next cluster follows on: the data straddles both.
          first = Math.floor(offset / this.clusterSize);
          count = 2;
        } else {
          offset = fresh * this.clusterSize;
          first = fresh;
          count = 1;
        }
      }
      await this.update(first, count, 1);
      if (fresh >= 0) {
        this.freeHint = Math.max(this.freeHint, fresh + 1);
        this.highWater = Math.max(this.highWater, fresh + 1);
      }
      this.freeByteOffset = (offset + bytes) % this.clusterSize === 0 ? 0 : offset + bytes;
      return offset;
    }
  }

  /** Frees clusters [first, first + count): one reference less. */
  async free(first: number, count: number): Promise<void> {
    await this.update(first, count, -1);
  }

  /** Drops the references of a compressed cluster's byte range. */
  async freeBytes(hostOffset: number, bytes: number): Promise<void> {
    const first = Math.floor(hostOffset / this.clusterSize);
    const last = Math.floor((hostOffset + bytes - 1) / this.clusterSize);
    await this.update(first, last - first + 1, -1);
  }

  /** Whether a refcount block lies in clusters [first, first + count). */
  hasBlockIn(first: number, count: number): boolean {
    if (!this.blockClusters) {
      this.blockClusters = new Set();
      for (const v of this.table) if (v > 0) this.blockClusters.add(v / this.clusterSize);
    }
    for (let c = first; c < first + count; c++) if (this.blockClusters.has(c)) return true;
    return false;
  }

  /** Clusters holding refcount blocks (built on first use, kept up to date). */
  private blockClusters: Set<number> | null = null;

  /** Writes dirty refcount blocks and flushes the file. */
  flush(): Promise<void> {
    return this.cache.flush();
  }

  /** First index of `count` free clusters at or after `from`. */
  private async findFree(count: number, from: number): Promise<number> {
    let start = Math.max(1, from);
    let run = 0;
    let index = start;
    const maxIndex = MAX_HOST_OFFSET / this.clusterSize;
    while (run < count) {
      if (index >= maxIndex) throw new FormatError('qcow2 image is full: no free clusters below 2^56', 'refcount');
      const t = Math.floor(index / this.perBlock);
      const block = this.blockOffset(t);
      if (block === 0) {
        // No block: every count in this range is zero.
        const rangeEnd = (t + 1) * this.perBlock;
        const take = Math.min(rangeEnd - index, count - run);
        run += take;
        index += take;
        continue;
      }
      const data = await this.cache.get(block);
      const base = t * this.perBlock;
      const rangeEnd = base + this.perBlock;
      while (index < rangeEnd && run < count) {
        if (getRefcountEntry(data, index - base, this.bits) === 0) {
          run++;
        } else {
          run = 0;
          start = index + 1;
        }
        index++;
      }
    }
    return start;
  }

  /**
   * Makes sure refcount blocks exist for clusters [first, first + count).
   * Returns true if it had to create one (the caller searches again: the
   * new block may sit where the caller was about to allocate).
   */
  private async ensureBlocks(first: number, count: number): Promise<boolean> {
    const firstT = Math.floor(first / this.perBlock);
    const lastT = Math.floor((first + count - 1) / this.perBlock);
    for (let t = firstT; t <= lastT; t++) {
      if (this.blockOffset(t) !== 0) continue;
      if (t >= this.table.length) await this.growTable(t);
      else await this.createBlock(t);
      return true;
    }
    return false;
  }

  /**
   * A new refcount block for table index `t`, placed at the first free
   * cluster (QEMU's alloc_refcount_block): if that cluster lies in the range
   * the block covers, the block counts itself; otherwise the cluster is
   * counted by the block of its own range (created first if missing).
   */
  private async createBlock(t: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 64) throw new FormatError('internal: refcount block placement does not settle');
      const index = await this.findFree(1, this.freeHint);
      const home = Math.floor(index / this.perBlock);
      const block = new Uint8Array(this.clusterSize);
      if (home === t) {
        setRefcountEntry(block, index - t * this.perBlock, this.bits, 1);
      } else if (this.blockOffset(home) === 0) {
        if (home >= this.table.length) await this.growTable(home);
        else await this.createBlock(home);
        continue;
      } else {
        await this.update(index, 1, 1);
      }
      const offset = index * this.clusterSize;
      // Refcount changes made so far go first, then the block, then the table entry.
      await this.cache.flush();
      await this.host.write(offset, block);
      await this.host.flush();
      const entry = new Uint8Array(REFT_ENTRY_BYTES);
      setU64(new DataView(entry.buffer), 0, offset);
      await this.host.write(this.tableOffset + t * REFT_ENTRY_BYTES, entry);
      await this.host.flush();
      this.table[t] = offset;
      this.blockClusters?.add(index);
      await this.cache.install(offset, block, false);
      this.highWater = Math.max(this.highWater, index + 1);
      this.freeHint = Math.max(this.freeHint, index + 1);
      return;
    }
  }

  /** One past the highest cluster in use (from the counts, the file size and this session's allocations). */
  async endCluster(): Promise<number> {
    let end = Math.max(this.highWater, Math.ceil(this.host.fileBytes() / this.clusterSize));
    for (let t = this.table.length - 1; t >= 0; t--) {
      const block = this.table[t]!;
      if (block <= 0) continue;
      const data = await this.cache.get(this.blockOffset(t));
      for (let i = this.perBlock - 1; i >= 0; i--) {
        if (getRefcountEntry(data, i, this.bits) !== 0) {
          end = Math.max(end, t * this.perBlock + i + 1);
          return end;
        }
      }
    }
    return end;
  }

  /**
   * Grows the refcount table so that index `needed` fits (QEMU's
   * qcow2_refcount_area): the new table and the blocks that count it go at
   * the end of the image, the header switches to it, the old one is freed.
   */
  private async growTable(needed: number): Promise<void> {
    await this.cache.flush();
    const area = await this.endCluster();
    const oldEntries = this.table.length;
    const perTableCluster = this.clusterSize / REFT_ENTRY_BYTES;
    let entries = Math.max(needed + 1, Math.ceil((oldEntries * 3) / 2));
    let nbBlocks = 0;
    let tableClusters = 0;
    for (let round = 0; ; round++) {
      if (round > 64) throw new FormatError('internal: refcount table growth does not settle');
      tableClusters = Math.ceil(entries / perTableCluster);
      // Blocks needed to count the area itself (new blocks + new table).
      let nb = 0;
      for (;;) {
        const end = area + nb + tableClusters;
        let missing = 0;
        for (let t = Math.floor(area / this.perBlock); t <= Math.floor((end - 1) / this.perBlock); t++) {
          if (t >= oldEntries || this.table[t] === 0) missing++;
        }
        if (missing === nb) break;
        nb = missing;
      }
      nbBlocks = nb;
      const lastT = Math.floor((area + nbBlocks + tableClusters - 1) / this.perBlock);
      if (lastT < entries) break;
      entries = lastT + 1;
    }
    tableClusters = Math.ceil(entries / perTableCluster);
    entries = tableClusters * perTableCluster;
    if (tableClusters * this.clusterSize > MAX_REFTABLE_BYTES) {
      throw new FormatError(`qcow2 refcount table would grow past ${MAX_REFTABLE_BYTES} bytes`, 'refcount_table_clusters');
    }
    const tableStart = area + nbBlocks;
    const areaEnd = tableStart + tableClusters;
    if (areaEnd * this.clusterSize > MAX_HOST_OFFSET) throw new FormatError('qcow2 image is full: no room for a larger refcount table', 'refcount');

    const newTable = new Float64Array(entries);
    newTable.set(this.table.map((v) => (v < 0 ? 0 : v)));
    // Keep corrupt entries as they were (they are refused on use).
    for (let t = 0; t < oldEntries; t++) if (this.table[t]! < 0) newTable[t] = this.table[t]!;
    const newBlocks = new Map<number, Uint8Array>();
    let next = area;
    for (let t = Math.floor(area / this.perBlock); t <= Math.floor((areaEnd - 1) / this.perBlock); t++) {
      if (t < oldEntries && this.table[t] !== 0) continue;
      newTable[t] = next * this.clusterSize;
      newBlocks.set(t, new Uint8Array(this.clusterSize));
      next++;
    }
    // Count the area: new blocks count their part directly, existing blocks through the cache.
    for (let c = area; c < areaEnd; c++) {
      const t = Math.floor(c / this.perBlock);
      const fresh = newBlocks.get(t);
      if (fresh) setRefcountEntry(fresh, c - t * this.perBlock, this.bits, 1);
    }
    for (let c = area; c < areaEnd; c++) {
      const t = Math.floor(c / this.perBlock);
      if (!newBlocks.has(t)) await this.update(c, 1, 1);
    }
    await this.cache.flush();
    for (const [t, data] of newBlocks) await this.host.write(newTable[t]!, data);
    const raw = new Uint8Array(tableClusters * this.clusterSize);
    const view = new DataView(raw.buffer);
    for (let t = 0; t < entries; t++) {
      const v = newTable[t]!;
      setU64(view, t * REFT_ENTRY_BYTES, v < 0 ? -v - 1 : v);
    }
    await this.host.write(tableStart * this.clusterSize, raw);
    await this.host.flush();
    await writeRefcountTableLocation(this.host, tableStart * this.clusterSize, tableClusters);
    await this.host.flush();
    const oldOffset = this.tableOffset;
    const oldClusters = this.tableClusters;
    this.table = newTable;
    this.blockClusters = null;
    this.tableOffset = tableStart * this.clusterSize;
    this.tableClusters = tableClusters;
    this.host.tableMoved(this.tableOffset, tableClusters);
    for (const [t, data] of newBlocks) await this.cache.install(newTable[t]!, data, false);
    this.highWater = Math.max(this.highWater, areaEnd);
    // The old table is unreferenced now.
    await this.free(oldOffset / this.clusterSize, oldClusters);
  }
}
