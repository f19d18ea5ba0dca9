/**
 * A qcow2 image: the ImageFormat over a file. Thin wiring of the header,
 * the cluster map, refcounts, the metadata caches and the guest reads and
 * writes (guest-read.ts, guest-write.ts), around what a session holds: the
 * range and metadata locks, the first change to the header (dirty bit,
 * autoclear), marking the image corrupt, flush and close. The backing
 * image (any ImageFormat) is opened by the caller (see open.ts).
 */
import { type BlockDevice, type DurabilityNotice, BlockError, checkDeviceRequest, closedError, readOnlyError } from '../../block/block-device.js';
import { type BlockStatus, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { MetadataCache, type MetadataIo } from './cache.js';
import { ClusterMap } from './cluster.js';
import {
  AUTOCLEAR_BITMAPS,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  L1E_BYTES,
  MAX_HOST_OFFSET,
  VERSION_3,
} from './constants.js';
import { Qcow2DataReader, readPadded } from './guest-read.js';
import { Qcow2DataWriter } from './guest-write.js';
import { type Qcow2Header, clearAutoclearFeatures, featureNames, readHeader, setIncompatibleFeature } from './header.js';
import { parseL1 } from './l2-entry.js';
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
  private readonly reader: Qcow2DataReader;
  private readonly writer: Qcow2DataWriter;
  private snapshotsValue: SnapshotTable | null = null;
  /**
   * The file's, except that a loss cannot be repaired by writing the guest's
   * bytes again: the tables and refcounts written since the last flush may
   * be gone with them.
   */
  readonly watchDurability?: (listener: (notice: DurabilityNotice) => void) => () => void;

  private constructor(
    readonly file: BlockDevice,
    header: Qcow2Header,
    l1: Uint32Array,
    writable: boolean,
    private readonly options: Qcow2OpenOptions,
  ) {
    this.header = header;
    this.writable = writable;
    if (file.watchDurability) {
      this.watchDurability = (listener) => file.watchDurability!((notice) => listener(notice.kind === 'lost' ? { ...notice, recoverable: false } : notice));
    }
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
    const backing = () => this.backingImage;
    this.reader = new Qcow2DataReader({ file, header, map: this.map, backing });
    this.writer = new Qcow2DataWriter({
      file,
      header,
      map: this.map,
      lock: this.lock,
      reader: this.reader,
      backing,
      refcounts: () => this.refcounts(),
    });
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
        tableMoved: (offset, clusters) => {
          h.refcountTableOffset = offset;
          h.refcountTableClusters = clusters;
        },
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
    checkDeviceRequest('read', offset, into.length, this.size, true);
    await this.reader.read(offset, into);
  }

  // ---- block status ----------------------------------------------------------------------

  /**
   * Status of the extent at `offset`, resolved through the backing chain.
   * With `contiguous`, data extents also end where the host offset jumps
   * (what `map` prints); otherwise they run on (what the mirror wants).
   */
  async blockStatus(offset: number, bytes: number, options: { contiguous?: boolean } = {}): Promise<BlockStatus> {
    if (this.closed) throw closedError('read', offset, bytes);
    checkDeviceRequest('read', offset, 0, this.size, true);
    const want = Math.max(0, Math.min(bytes, this.size - offset));
    if (want === 0) return { offset, bytes: 0, kind: 'unallocated', depth: 0 };
    const local = await this.reader.status(offset, want, options.contiguous ?? false);
    const total = local.bytes;
    if (local.kind === 'unallocated') {
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
    const out: BlockStatus = { offset, bytes: total, kind: local.kind, depth: 0 };
    if (local.hostOffset !== undefined) out.hostOffset = local.hostOffset;
    return out;
  }

  // ---- writing ------------------------------------------------------------------------------

  private checkWritable(op: 'write' | 'discard', offset: number, bytes: number): void {
    if (this.closed) throw closedError(op, offset, bytes);
    if (!this.writable) throw readOnlyError(op, offset, bytes);
    checkDeviceRequest(op, offset, bytes, this.size, true);
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
    await this.change(Math.floor(offset / cs), Math.ceil((offset + data.length) / cs), () =>
      this.compressWrites ? this.writer.writeCompressed(offset, data) : this.writer.write(offset, data),
    );
  }

  /** Runs a change of clusters [first, end) under their range lock, after the session's first header change. */
  private async change(first: number, end: number, op: () => Promise<void>): Promise<void> {
    const release = await this.ranges.acquire(first, end);
    try {
      await this.beforeMetadataWrite();
      await op();
    } finally {
      release();
    }
  }

  async writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    this.checkWritable('write', offset, bytes);
    if (bytes === 0) return;
    const cs = this.header.clusterSize;
    await this.change(Math.floor(offset / cs), Math.ceil((offset + bytes) / cs), () => this.writer.writeZeroes(offset, bytes, options.unmap));
  }

  /** Discards whole clusters (partial ones are left alone), as QEMU's qcow2 discard. */
  async discard(offset: number, bytes: number): Promise<void> {
    this.checkWritable('discard', offset, bytes);
    const cs = this.header.clusterSize;
    const whole = this.writer.wholeClusters(offset, bytes);
    if (whole.end <= whole.start) return;
    await this.change(whole.start / cs, whole.end / cs, () => this.writer.discardClusters(whole.start / cs, (whole.end - whole.start) / cs));
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
    await this.change(Math.floor(offset / cs), Math.ceil((offset + bytes) / cs), () => this.writer.deallocate(offset, bytes));
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
