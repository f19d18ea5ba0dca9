/**
 * A qcow2 image: the ImageFormat over a file. Thin wiring of the header,
 * the cluster map, refcounts, the metadata caches and compression; the
 * backing image (any ImageFormat) is opened by the caller (see open.ts).
 */
import { type BlockDevice, BlockError, checkRequest, closedError, readOnlyError } from '../../block/block-device.js';
import { type BlockStatus, type BlockStatusKind, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { MetadataCache, type MetadataIo } from './cache.js';
import { ClusterMap, type WritePlan } from './cluster.js';
import { compressCluster, decompressCluster } from './compress.js';
import {
  AUTOCLEAR_BITMAPS,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  L1E_BYTES,
  MAX_HOST_OFFSET,
  VERSION_3,
} from './constants.js';
import { type Qcow2Header, clearAutoclearFeatures, featureNames, readHeader, setIncompatibleFeature } from './header.js';
import type { SubclusterKind } from './l2-entry.js';
import { parseCompressed, parseL1 } from './l2-entry.js';
import { Mutex, RangeLocks } from './locks.js';
import { metadataOverlap } from './overlap.js';
import { Refcounts } from './refcount.js';
import { repairDirty } from './repair.js';
import { readSnapshots, type SnapshotTable } from './snapshot.js';

export interface Qcow2OpenOptions {
  /** Open read-only (default: as the file). */
  readOnly?: boolean;
  /** Opens the backing image the header names; required when it names one. */
  openBacking?: (name: string, format: string | undefined) => Promise<ImageFormat>;
  /** Bytes of L2 tables kept in memory (default 32 MiB). */
  l2CacheBytes?: number;
  /** Bytes of refcount blocks kept in memory (default 4 MiB). */
  refcountCacheBytes?: number;
  /** Write whole, aligned clusters compressed (zlib images only), as `qemu-img convert -c`. */
  compress?: boolean;
  /** Skip repairing a dirty image on a writable open (check uses this to look at it as it is). */
  noRepair?: boolean;
}

const DEFAULT_L2_CACHE_BYTES = 32 << 20;
const DEFAULT_REFCOUNT_CACHE_BYTES = 4 << 20;
/** A write is planned in steps of at most this many bytes (and one L2 table). */
const MAX_PLAN_BYTES = 32 << 20;

type Piece = { offset: number; bytes: number; kind: SubclusterKind; host: number; hi: number; lo: number };

export class Qcow2Image implements ImageFormat {
  readonly format = 'qcow2' as const;
  readonly header: Qcow2Header;
  readonly map: ClusterMap;
  readonly io: MetadataIo;
  private refcountsValue: Refcounts | null = null;
  private backingImage: ImageFormat | null = null;
  private closed = false;
  private readonly writable: boolean;
  private compressWrites = false;
  /** The first change of this session happened (header updated: dirty bit, autoclear). */
  private touched = false;
  /** This session set the dirty bit (lazy refcounts). */
  private markedDirty = false;
  private readonly lock = new Mutex();
  private readonly ranges = new RangeLocks();
  private lastCompressed: { hi: number; lo: number; data: Uint8Array } | null = null;
  private snapshotsValue: SnapshotTable | null = null;

  private constructor(
    readonly file: BlockDevice,
    header: Qcow2Header,
    l1: Uint32Array,
    writable: boolean,
    private readonly options: Qcow2OpenOptions,
  ) {
    this.header = header;
    this.writable = writable;
    const io: MetadataIo = {
      read: (offset, into) => readPadded(file, offset, into),
      write: (offset, data) => {
        if (offset + data.length > MAX_HOST_OFFSET) throw new FormatError(`qcow2 write at ${offset} past 2^56`, 'offset');
        return file.write(offset, data);
      },
      flush: () => file.flush(),
    };
    this.io = io;
    const l2Entries = Math.max(4, Math.floor((options.l2CacheBytes ?? DEFAULT_L2_CACHE_BYTES) / header.clusterSize));
    this.map = new ClusterMap({
      header,
      io,
      l2Cache: new MetadataCache(io, 'L2', header.clusterSize, l2Entries),
      l1,
      hasBacking: () => this.backingImage !== null,
    });
    this.map.lazyRefcounts = (header.compatible & COMPAT_LAZY_REFCOUNTS) !== 0 && header.version === VERSION_3;
  }

  /** Opens a qcow2 image on `file`: header, L1 table, and the backing image. */
  static async open(file: BlockDevice, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const readOnly = options.readOnly ?? file.readOnly;
    if (!readOnly && file.readOnly) throw readOnlyError('open', 0, 0);
    const header = await readHeader(file);
    if (!readOnly && header.incompatible & INCOMPAT_CORRUPT) {
      throw new FormatError('qcow2 image is marked corrupt: it can only be opened read-only (check it, then repair it with QEMU)', 'incompatible_features');
    }
    if (!readOnly && header.refcountTableClusters === 0) {
      throw new FormatError('qcow2 refcount_table_clusters is 0: the image has no refcount table and cannot be written', 'refcount_table_clusters');
    }
    const l1Raw = new Uint8Array(header.l1Size * L1E_BYTES);
    await readPadded(file, header.l1TableOffset, l1Raw);
    const image = new Qcow2Image(file, header, parseL1(l1Raw), !readOnly, options);
    try {
      if (header.backingFile !== undefined) {
        if (!options.openBacking) {
          throw new FormatError(`qcow2 image has a backing file '${header.backingFile}' and no way to open it`, 'backing_file');
        }
        image.backingImage = await options.openBacking(header.backingFile, header.backingFormat);
      }
      if (!readOnly) {
        await image.loadRefcounts();
        if (options.compress) image.compress = true;
        if (header.incompatible & INCOMPAT_DIRTY && !options.noRepair) await repairDirty(image);
      }
    } catch (err) {
      await image.backingImage?.close().catch(() => {});
      throw err;
    }
    return image;
  }

  // ---- properties -----------------------------------------------------------------------

  get size(): number {
    return this.header.virtualSize;
  }

  get readOnly(): boolean {
    return !this.writable;
  }

  get backing(): ImageFormat | null {
    return this.backingImage;
  }

  get clusterSize(): number {
    return this.header.clusterSize;
  }

  /** Whether whole, aligned cluster writes are stored compressed. */
  get compress(): boolean {
    return this.compressWrites;
  }

  set compress(on: boolean) {
    if (on && this.header.compressionType !== 'zlib') {
      throw new FormatError(`Compressed writes need compression_type zlib (this image uses ${this.header.compressionType})`, 'compression_type');
    }
    if (on && !this.writable) throw readOnlyError('write', 0, 0);
    this.compressWrites = on;
  }

  /** Refcounts (loaded on demand for read-only images). */
  async refcounts(): Promise<Refcounts> {
    if (!this.refcountsValue) await this.loadRefcounts();
    return this.refcountsValue!;
  }

  async snapshots(): Promise<SnapshotTable> {
    this.snapshotsValue ??= await readSnapshots(this.io, this.header);
    return this.snapshotsValue;
  }

  private async loadRefcounts(): Promise<void> {
    const h = this.header;
    const refcounts = await Refcounts.load(
      {
        read: this.io.read,
        write: this.io.write,
        flush: this.io.flush,
        fileBytes: () => this.file.size,
        beforeMetadataWrite: () => this.beforeMetadataWrite(),
        checkFree: (first, count) => this.checkFree(first, count),
      },
      {
        clusterBits: h.clusterBits,
        refcountOrder: h.refcountOrder,
        tableOffset: h.refcountTableOffset,
        tableClusters: h.refcountTableClusters,
        cacheEntries: Math.floor((this.options.refcountCacheBytes ?? DEFAULT_REFCOUNT_CACHE_BYTES) / h.clusterSize),
      },
    );
    this.refcountsValue = refcounts;
    if (this.writable) this.map.refcounts = refcounts;
  }

  /** Refcounts call clusters free: refuse (and mark the image corrupt) if they hold metadata. */
  private async checkFree(first: number, count: number): Promise<void> {
    const what = await metadataOverlap(
      {
        header: this.header,
        refcounts: this.refcountsValue!,
        hasL2In: (f, c) => this.map.hasL2In(f, c),
        snapshots: () => this.snapshots(),
      },
      first,
      count,
    );
    if (what) await this.signalCorruption(`clusters ${first}..${first + count - 1} are free by their refcounts but hold ${what}`);
  }

  /** Marks the image corrupt (as QEMU does) and refuses the operation. */
  private async signalCorruption(message: string): Promise<never> {
    const h = this.header;
    if (this.writable && h.version === VERSION_3) {
      await setIncompatibleFeature(this.file, h, INCOMPAT_CORRUPT, true).catch(() => {});
      await this.file.flush().catch(() => {});
    }
    throw new FormatError(`qcow2 image is corrupt: ${message}; it is marked corrupt and can only be opened read-only now`, 'refcounts');
  }

  // ---- reading ---------------------------------------------------------------------------

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkRequest('read', offset, into.length, this.size, true);
    await this.readGuest(offset, into);
  }

  /** Reads guest bytes as the image holds them now (no locks: callers hold what they need). */
  private async readGuest(offset: number, into: Uint8Array): Promise<void> {
    const pieces: Piece[] = [];
    await this.map.walk(offset, into.length, (off, bytes, kind, host, hi, lo) => {
      const last = pieces[pieces.length - 1];
      if (last && last.kind === kind && kind === 'normal' && last.host + last.bytes === host) last.bytes += bytes;
      else if (last && last.kind === kind && kind !== 'normal' && kind !== 'compressed') last.bytes += bytes;
      else pieces.push({ offset: off, bytes, kind, host, hi, lo });
      return true;
    });
    for (const p of pieces) {
      const view = into.subarray(p.offset - offset, p.offset - offset + p.bytes);
      switch (p.kind) {
        case 'normal':
          await readPadded(this.file, p.host, view);
          break;
        case 'zero-plain':
        case 'zero-alloc':
          view.fill(0);
          break;
        case 'unallocated-plain':
        case 'unallocated-alloc':
          await this.readBacking(p.offset, view);
          break;
        case 'compressed': {
          const cluster = await this.compressedCluster(p.hi, p.lo, p.offset);
          const within = p.offset % this.header.clusterSize;
          view.set(cluster.subarray(within, within + p.bytes));
          break;
        }
        default:
          throw new FormatError(`qcow2 invalid cluster at guest offset ${p.offset}`, 'l2_entry');
      }
    }
  }

  private async readBacking(offset: number, into: Uint8Array): Promise<void> {
    const backing = this.backingImage;
    const inside = backing ? Math.max(0, Math.min(into.length, backing.size - offset)) : 0;
    if (inside > 0) await backing!.read(offset, into.subarray(0, inside));
    if (inside < into.length) into.fill(0, inside);
  }

  private async compressedCluster(hi: number, lo: number, guestOffset: number): Promise<Uint8Array> {
    const last = this.lastCompressed;
    if (last && last.hi === hi && last.lo === lo) return last.data;
    const cs = this.header.clusterSize;
    const d = parseCompressed(hi, lo, this.header.clusterBits);
    if (d.bytes <= 0 || d.hostOffset + d.bytes > MAX_HOST_OFFSET) {
      throw new FormatError(`qcow2 compressed cluster at guest offset ${guestOffset} has a bad descriptor (offset ${d.hostOffset}, ${d.bytes} bytes)`, 'l2_entry');
    }
    if (d.hostOffset < cs) {
      throw new FormatError(`qcow2 compressed cluster at guest offset ${guestOffset} points into the header (offset ${d.hostOffset})`, 'l2_entry');
    }
    const raw = new Uint8Array(d.bytes);
    await readPadded(this.file, d.hostOffset, raw);
    const data = new Uint8Array(cs);
    decompressCluster(this.header.compressionType, raw, data, `at guest offset ${guestOffset - (guestOffset % cs)} (host offset ${d.hostOffset})`);
    this.lastCompressed = { hi, lo, data };
    return data;
  }

  /** True if [offset, offset + bytes) is known to read as zeroes from the metadata alone. */
  private async readsAsZero(offset: number, bytes: number): Promise<boolean> {
    let zero = true;
    const backingSize = this.backingImage ? this.backingImage.size : 0;
    await this.map.walk(offset, bytes, (off, len, kind) => {
      if (kind === 'zero-plain' || kind === 'zero-alloc') return true;
      if ((kind === 'unallocated-plain' || kind === 'unallocated-alloc') && off >= backingSize) return true;
      zero = false;
      return false;
    });
    return zero;
  }

  // ---- block status ----------------------------------------------------------------------

  /**
   * Status of the extent at `offset`, resolved through the backing chain.
   * With `contiguous`, data extents also end where the host offset jumps
   * (what `map` prints); otherwise they run on (what the mirror wants).
   */
  async blockStatus(offset: number, bytes: number, options: { contiguous?: boolean } = {}): Promise<BlockStatus> {
    if (this.closed) throw closedError('read', offset, bytes);
    checkRequest('read', offset, 0, this.size, true);
    const want = Math.max(0, Math.min(bytes, this.size - offset));
    if (want === 0) return { offset, bytes: 0, kind: 'unallocated', depth: 0 };
    let kind: BlockStatusKind | null = null;
    let total = 0;
    let host = -1;
    let compressed = false;
    let contiguousHost = true;
    await this.map.walk(offset, want, (_off, len, sk, h) => {
      const k = statusKind(sk);
      const isCompressed = sk === 'compressed';
      const pieceHost = k === 'data' && !isCompressed ? h : -1;
      if (kind === null) {
        kind = k;
        host = pieceHost;
        compressed = isCompressed;
      } else {
        if (k !== kind) return false;
        if (k === 'data') {
          const follows = !isCompressed && !compressed && host >= 0 && pieceHost === host + total;
          if (!follows) {
            if (options.contiguous) return false;
            contiguousHost = false;
          }
        }
      }
      total += len;
      return true;
    });
    const k = kind as BlockStatusKind | null;
    if (k === 'unallocated') {
      const backing = this.backingImage;
      if (!backing) return { offset, bytes: total, kind: 'unallocated', depth: 1 };
      if (offset >= backing.size) return { offset, bytes: total, kind: 'unallocated', depth: 1 };
      const below =
        backing instanceof Qcow2Image
          ? await backing.blockStatus(offset, Math.min(total, backing.size - offset), options)
          : await backing.blockStatus(offset, Math.min(total, backing.size - offset));
      const out: BlockStatus = { offset, bytes: Math.min(below.bytes, total), kind: below.kind, depth: below.depth + 1 };
      if (below.hostOffset !== undefined) out.hostOffset = below.hostOffset;
      return out;
    }
    const out: BlockStatus = { offset, bytes: total, kind: k ?? 'unallocated', depth: 0 };
    if (k === 'data' && host >= 0 && contiguousHost) out.hostOffset = host;
    return out;
  }

  // ---- writing ------------------------------------------------------------------------------

  private checkWritable(op: 'write' | 'discard', offset: number, bytes: number): void {
    if (this.closed) throw closedError(op, offset, bytes);
    if (!this.writable) throw readOnlyError(op, offset, bytes);
    checkRequest(op, offset, bytes, this.size, true);
  }

  /** The first change of a session: clear autoclear bits we do not maintain, set the dirty bit for lazy refcounts. */
  private async beforeMetadataWrite(): Promise<void> {
    if (this.touched) return;
    this.touched = true;
    const h = this.header;
    if (h.version !== VERSION_3) return;
    const lazy = this.map.lazyRefcounts;
    const autoclear = h.autoclear | h.autoclearHi;
    if (!lazy && autoclear === 0) return;
    if (lazy) {
      await setIncompatibleFeature(this.file, h, INCOMPAT_DIRTY, true);
      this.markedDirty = true;
    }
    if (autoclear !== 0) await clearAutoclearFeatures(this.file, h);
    await this.file.flush();
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable('write', offset, data.length);
    if (data.length === 0) return;
    const cs = this.header.clusterSize;
    const release = await this.ranges.acquire(Math.floor(offset / cs), Math.ceil((offset + data.length) / cs));
    try {
      await this.beforeMetadataWrite();
      if (this.compressWrites) await this.writeCompressed(offset, data);
      else await this.writeLocked(offset, data);
    } finally {
      release();
    }
  }

  /** Writes with the clusters' range lock held. */
  private async writeLocked(offset: number, data: Uint8Array): Promise<void> {
    const coverage = this.map.l2Coverage;
    let done = 0;
    while (done < data.length) {
      const off = offset + done;
      const tableEnd = (Math.floor(off / coverage) + 1) * coverage;
      const n = Math.min(data.length - done, tableEnd - off, MAX_PLAN_BYTES);
      const fileBytes = this.file.size;
      const plan = await this.lock.run(() => this.map.prepareWrite(off, n, fileBytes));
      try {
        await this.executeWrite(plan, off, data.subarray(done, done + n));
      } catch (err) {
        await this.lock.run(() => this.map.abortWrite(plan)).catch(() => {});
        throw err;
      }
      await this.lock.run(() => this.map.commitWrite(plan));
      done += n;
    }
  }

  /** The data I/O of a plan: old content copied where needed, then the new bytes, in as few writes as contiguity allows. */
  private async executeWrite(plan: WritePlan, offset: number, data: Uint8Array): Promise<void> {
    let runHost = -1;
    let runStart = 0;
    let runEnd = 0;
    const flushRun = async () => {
      if (runHost >= 0 && runEnd > runStart) await this.file.write(runHost, data.subarray(runStart, runEnd));
      runHost = -1;
    };
    for (const cw of plan.clusters) {
      for (const [a, b] of cw.fills) {
        if (cw.fresh && (await this.readsAsZero(cw.guestOffset + a, b - a))) continue;
        const old = new Uint8Array(b - a);
        await this.readGuest(cw.guestOffset + a, old);
        await this.file.write(cw.hostOffset + a, old);
      }
      const start = cw.guestOffset + cw.from - offset;
      const end = cw.guestOffset + cw.to - offset;
      const host = cw.hostOffset + cw.from;
      if (runHost >= 0 && runHost + (runEnd - runStart) === host && runEnd === start) {
        runEnd = end;
      } else {
        await flushRun();
        runHost = host;
        runStart = start;
        runEnd = end;
      }
    }
    await flushRun();
  }

  /** Compressed writes: each whole, aligned cluster without a host cluster is stored compressed. */
  private async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    const cs = this.header.clusterSize;
    let plainFrom = -1;
    const flushPlain = async (to: number) => {
      if (plainFrom >= 0 && to > plainFrom) await this.writeLocked(offset + plainFrom, data.subarray(plainFrom, to));
      plainFrom = -1;
    };
    for (let at = 0; at < data.length; ) {
      const off = offset + at;
      const clusterEnd = Math.min(data.length, at + (cs - (off % cs)));
      const whole = off % cs === 0 && clusterEnd - at === cs;
      if (whole && (await this.lock.run(() => this.map.canCompress(off)))) {
        const packed = compressCluster(this.header.compressionType, data.subarray(at, clusterEnd));
        if (packed) {
          await flushPlain(at);
          const host = await this.lock.run(async () => (await this.refcounts()).allocateBytes(packed.length));
          try {
            await this.file.write(host, packed);
          } catch (err) {
            await this.lock.run(async () => (await this.refcounts()).freeBytes(host, packed.length)).catch(() => {});
            throw err;
          }
          await this.lock.run(() => this.map.linkCompressed(off, host, packed.length));
          at = clusterEnd;
          continue;
        }
      }
      if (plainFrom < 0) plainFrom = at;
      at = clusterEnd;
    }
    await flushPlain(data.length);
  }

  async writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    this.checkWritable('write', offset, bytes);
    if (bytes === 0) return;
    const cs = this.header.clusterSize;
    const release = await this.ranges.acquire(Math.floor(offset / cs), Math.ceil((offset + bytes) / cs));
    try {
      await this.beforeMetadataWrite();
      const end = offset + bytes;
      // A partial cluster at the end of the image counts as whole (QEMU does the same).
      const fullStart = Math.ceil(offset / cs) * cs;
      const fullEnd = end === this.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
      if (fullEnd <= fullStart) {
        // No whole cluster: at most two partial ones.
        const split = Math.min(end, fullStart);
        await this.zeroPartial(offset, split - offset);
        if (split < end) await this.zeroPartial(split, end - split);
        return;
      }
      if (offset < fullStart) await this.zeroPartial(offset, fullStart - offset);
      await this.zeroWhole(fullStart / cs, (fullEnd - fullStart) / cs, options.unmap);
      if (fullEnd < end) await this.zeroPartial(fullEnd, end - fullEnd);
    } finally {
      release();
    }
  }

  private async zeroWhole(first: number, count: number, unmap: boolean): Promise<void> {
    const perTable = this.map.l2Entries;
    const v3 = this.header.version === VERSION_3;
    for (let c = first; c < first + count; ) {
      const n = Math.min(first + count - c, (Math.floor(c / perTable) + 1) * perTable - c);
      if (v3) {
        await this.lock.run(() => this.map.zeroClusters(c, n, unmap));
      } else if (!this.backingImage && unmap) {
        await this.lock.run(() => this.map.deallocateClusters(c, n));
      } else {
        const cs = this.header.clusterSize;
        const start = c * cs;
        const stop = Math.min(this.size, (c + n) * cs);
        if (!(await this.readsAsZero(start, stop - start))) await this.writeZeroData(start, stop - start);
      }
      c += n;
    }
  }

  /**
   * The whole subclusters inside [offset, offset + bytes) of one cluster,
   * as byte offsets a..b (the image's last subcluster counts as whole when
   * the range runs to the end).
   */
  private wholeSubclusters(offset: number, bytes: number): { clusterStart: number; a: number; b: number; scb: number } {
    const cs = this.header.clusterSize;
    const scb = this.map.subclusterBytes;
    const end = offset + bytes;
    const a = Math.ceil(offset / scb) * scb;
    const b = end === this.size ? Math.ceil(end / scb) * scb : Math.floor(end / scb) * scb;
    return { clusterStart: Math.floor(offset / cs) * cs, a, b, scb };
  }

  /** Zeroes part of one cluster: subcluster zero bits where aligned, else zero data, unless it already reads as zero. */
  private async zeroPartial(offset: number, bytes: number): Promise<void> {
    if (await this.readsAsZero(offset, bytes)) return;
    if (this.header.extendedL2) {
      const { clusterStart, a, b, scb } = this.wholeSubclusters(offset, bytes);
      const end = offset + bytes;
      if (b > a) {
        const ok = await this.lock.run(() => this.map.zeroSubclusters(clusterStart, (a - clusterStart) / scb, (b - clusterStart) / scb));
        if (ok) {
          if (offset < a) await this.writeZeroData(offset, a - offset);
          if (b < end) await this.writeZeroData(b, end - b);
          return;
        }
      }
    }
    await this.writeZeroData(offset, bytes);
  }

  private async writeZeroData(offset: number, bytes: number): Promise<void> {
    const piece = new Uint8Array(Math.min(bytes, 4 << 20));
    for (let done = 0; done < bytes; done += piece.length) {
      await this.writeLocked(offset + done, piece.subarray(0, Math.min(piece.length, bytes - done)));
    }
  }

  /** Discards whole clusters (partial ones are left alone), as QEMU's qcow2 discard. */
  async discard(offset: number, bytes: number): Promise<void> {
    this.checkWritable('discard', offset, bytes);
    const cs = this.header.clusterSize;
    const end = offset + bytes;
    const fullStart = Math.ceil(offset / cs) * cs;
    const fullEnd = end === this.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
    if (fullEnd <= fullStart) return;
    const release = await this.ranges.acquire(fullStart / cs, fullEnd / cs);
    try {
      await this.beforeMetadataWrite();
      const perTable = this.map.l2Entries;
      const first = fullStart / cs;
      const count = (fullEnd - fullStart) / cs;
      for (let c = first; c < first + count; ) {
        const n = Math.min(first + count - c, (Math.floor(c / perTable) + 1) * perTable - c);
        await this.lock.run(() => this.map.discardClusters(c, n));
        c += n;
      }
    } finally {
      release();
    }
  }

  /**
   * Makes [offset, offset + bytes) read from the backing image again (a full
   * discard): whole clusters are unmapped, whole subclusters (extended L2)
   * unallocated, and what remains of partial clusters gets the backing
   * image's bytes written.
   */
  async deallocate(offset: number, bytes: number): Promise<void> {
    this.checkWritable('discard', offset, bytes);
    if (bytes === 0) return;
    const cs = this.header.clusterSize;
    const end = offset + bytes;
    const release = await this.ranges.acquire(Math.floor(offset / cs), Math.ceil(end / cs));
    try {
      await this.beforeMetadataWrite();
      const fullStart = Math.ceil(offset / cs) * cs;
      const fullEnd = end === this.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
      if (fullEnd > fullStart) {
        const perTable = this.map.l2Entries;
        const first = fullStart / cs;
        const count = (fullEnd - fullStart) / cs;
        for (let c = first; c < first + count; ) {
          const n = Math.min(first + count - c, (Math.floor(c / perTable) + 1) * perTable - c);
          await this.lock.run(() => this.map.fullDiscardClusters(c, n));
          c += n;
        }
        if (offset < fullStart) await this.deallocatePartial(offset, fullStart - offset);
        if (fullEnd < end) await this.deallocatePartial(fullEnd, end - fullEnd);
      } else {
        const split = Math.min(end, fullStart);
        await this.deallocatePartial(offset, split - offset);
        if (split < end) await this.deallocatePartial(split, end - split);
      }
    } finally {
      release();
    }
  }

  /** Part of one cluster reads from the backing image again. */
  private async deallocatePartial(offset: number, bytes: number): Promise<void> {
    let copyFrom = offset;
    let copyTo = offset + bytes;
    if (this.header.extendedL2) {
      const { clusterStart, a, b, scb } = this.wholeSubclusters(offset, bytes);
      const end = offset + bytes;
      if (b > a && (await this.lock.run(() => this.map.unallocateSubclusters(clusterStart, (a - clusterStart) / scb, (b - clusterStart) / scb)))) {
        if (offset < a) await this.copyFromBacking(offset, a - offset);
        if (b < end) await this.copyFromBacking(b, end - b);
        return;
      }
      copyFrom = offset;
      copyTo = end;
    }
    await this.copyFromBacking(copyFrom, copyTo - copyFrom);
  }

  private async copyFromBacking(offset: number, bytes: number): Promise<void> {
    const data = new Uint8Array(bytes);
    await this.readBacking(offset, data);
    await this.writeLocked(offset, data);
  }

  /** Writes every dirty table (refcounts before the L2 tables that need them) and flushes the file. */
  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
    if (!this.writable) return;
    await this.lock.run(async () => {
      await this.map.l2Cache.flush();
      if (this.refcountsValue) await this.refcountsValue.flush();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    let failure: unknown;
    try {
      if (this.writable) {
        await this.flush();
        if (this.markedDirty) await this.markClean();
      }
    } catch (err) {
      failure = err;
    }
    this.closed = true;
    this.map.l2Cache.clear();
    this.refcountsValue?.cache.clear();
    await this.backingImage?.close().catch((err: unknown) => (failure ??= err));
    await this.file.close().catch((err: unknown) => (failure ??= err));
    if (failure) throw failure;
  }

  /** Clears the dirty bit once everything is on disk (lazy refcounts). */
  private async markClean(): Promise<void> {
    await setIncompatibleFeature(this.file, this.header, INCOMPAT_DIRTY, false);
    await this.file.flush();
    this.markedDirty = false;
  }

  async resize(bytes: number): Promise<void> {
    throw new BlockError('ENOTSUP', 'resize', 0, bytes, 'resizing qcow2 images is not supported');
  }

  async info(): Promise<ImageInfo> {
    const h = this.header;
    const info: ImageInfo = {
      format: 'qcow2',
      virtualSize: h.virtualSize,
      fileSize: this.file.size,
      clusterSize: h.clusterSize,
      compat: h.version === VERSION_3 ? '1.1' : '0.10',
    };
    if (h.backingFile !== undefined) info.backingFile = h.backingFile;
    if (h.backingFormat === 'raw' || h.backingFormat === 'qcow2') info.backingFormat = h.backingFormat;
    if (this.backingImage) info.backing = await this.backingImage.info();
    let snapshots: SnapshotTable | undefined;
    try {
      snapshots = await this.snapshots();
    } catch {
      snapshots = undefined;
    }
    info.details = {
      refcountBits: 1 << h.refcountOrder,
      lazyRefcounts: (h.compatible & COMPAT_LAZY_REFCOUNTS) !== 0,
      corrupt: (h.incompatible & INCOMPAT_CORRUPT) !== 0,
      dirty: (h.incompatible & INCOMPAT_DIRTY) !== 0,
      extendedL2: h.extendedL2,
      compressionType: h.compressionType,
      bitmaps: (h.autoclear & AUTOCLEAR_BITMAPS) !== 0,
      unknownCompatibleFeatures: featureNames(h, 'compatible', true),
      snapshots: snapshots?.snapshots.map((s) => ({ id: s.id, name: s.name, vmStateBytes: s.vmStateBytes, dateSeconds: s.dateSeconds })) ?? [],
    };
    return info;
  }
}

function statusKind(kind: SubclusterKind): BlockStatusKind {
  switch (kind) {
    case 'normal':
    case 'compressed':
      return 'data';
    case 'zero-plain':
    case 'zero-alloc':
      return 'zero';
    default:
      return 'unallocated';
  }
}

/** Reads `into` from `offset`; what lies past the end of the file reads as zeroes. */
export async function readPadded(file: BlockDevice, offset: number, into: Uint8Array): Promise<void> {
  const inside = Math.max(0, Math.min(into.length, file.size - offset));
  if (inside > 0) await file.read(offset, into.subarray(0, inside));
  if (inside < into.length) into.fill(0, inside);
}

