/**
 * Writing guest data (QEMU's qcow2_co_pwritev_part, its compressed write,
 * pwrite_zeroes and pdiscard): writes planned on the map (write-plan.ts),
 * their data I/O outside the metadata lock; whole clusters stored
 * compressed; ranges zeroed, discarded or deallocated, whole clusters
 * through the map and partial ones as subcluster bits or as data.
 *
 * Callers (the image) hold the range lock of the clusters a request
 * touches and have made the session's first change to the header.
 */
import type { BlockDevice } from '../../block/block-device.js';
import type { ImageFormat } from '../image-format.js';
import type { ClusterMap } from './cluster.js';
import { compressCluster } from './compress.js';
import { VERSION_3 } from './constants.js';
import type { Qcow2DataReader } from './guest-read.js';
import type { Qcow2Header } from './header.js';
import type { Mutex } from './locks.js';
import type { Refcounts } from './refcount.js';
import { abortWrite, commitWrite, prepareWrite, type WritePlan } from './write-plan.js';

/** A write is planned in steps of at most this many bytes (and one L2 table). */
const MAX_PLAN_BYTES = 32 << 20;

/** What writing needs of the image. */
export interface WriteParts {
  readonly file: BlockDevice;
  readonly header: Qcow2Header;
  readonly map: ClusterMap;
  /** The metadata lock: changes to the map and the refcounts run under it. */
  readonly lock: Mutex;
  readonly reader: Qcow2DataReader;
  /** The backing image, if there is one. */
  backing(): ImageFormat | null;
  refcounts(): Promise<Refcounts>;
}

/** The qcow2 image's write path for guest data (not a guest: what a guest's writes go through). */
export class Qcow2DataWriter {
  private readonly file: BlockDevice;
  private readonly header: Qcow2Header;
  private readonly map: ClusterMap;
  private readonly lock: Mutex;
  private readonly reader: Qcow2DataReader;
  private readonly backing: () => ImageFormat | null;
  private readonly refcounts: () => Promise<Refcounts>;

  constructor(parts: WriteParts) {
    this.file = parts.file;
    this.header = parts.header;
    this.map = parts.map;
    this.lock = parts.lock;
    this.reader = parts.reader;
    this.backing = parts.backing;
    this.refcounts = parts.refcounts;
  }

  private get size(): number {
    return this.header.virtualSize;
  }

  /**
   * The whole clusters inside [offset, offset + bytes) as the byte range
   * [start, end): empty when there is none. A partial cluster at the end of
   * the image counts as whole (QEMU does the same).
   */
  wholeClusters(offset: number, bytes: number): { start: number; end: number } {
    const cs = this.header.clusterSize;
    const end = offset + bytes;
    const fullStart = Math.ceil(offset / cs) * cs;
    const fullEnd = end === this.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
    return { start: fullStart, end: fullEnd };
  }

  /** Writes `data` at `offset`: one plan per L2 table (and MAX_PLAN_BYTES), its data written between prepare and commit. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const coverage = this.map.l2Coverage;
    let done = 0;
    while (done < data.length) {
      const off = offset + done;
      const tableEnd = (Math.floor(off / coverage) + 1) * coverage;
      const n = Math.min(data.length - done, tableEnd - off, MAX_PLAN_BYTES);
      const fileBytes = this.file.size;
      const plan = await this.lock.run(() => prepareWrite(this.map, off, n, fileBytes));
      try {
        await this.executeWrite(plan, off, data.subarray(done, done + n));
      } catch (err) {
        await this.lock.run(() => abortWrite(this.map, plan)).catch(() => {});
        throw err;
      }
      await this.lock.run(() => commitWrite(this.map, plan));
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
        if (cw.fresh && (await this.reader.readsAsZero(cw.guestOffset + a, b - a))) continue;
        const old = new Uint8Array(b - a);
        await this.reader.read(cw.guestOffset + a, old);
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
  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    const cs = this.header.clusterSize;
    let plainFrom = -1;
    const flushPlain = async (to: number) => {
      if (plainFrom >= 0 && to > plainFrom) await this.write(offset + plainFrom, data.subarray(plainFrom, to));
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

  /** Makes [offset, offset + bytes) read as zeroes: whole clusters through the map, partial ones by subclusters or data. */
  async writeZeroes(offset: number, bytes: number, unmap: boolean): Promise<void> {
    const cs = this.header.clusterSize;
    const end = offset + bytes;
    const { start: fullStart, end: fullEnd } = this.wholeClusters(offset, bytes);
    if (fullEnd <= fullStart) {
      // No whole cluster: at most two partial ones.
      const split = Math.min(end, fullStart);
      await this.zeroPartial(offset, split - offset);
      if (split < end) await this.zeroPartial(split, end - split);
      return;
    }
    if (offset < fullStart) await this.zeroPartial(offset, fullStart - offset);
    await this.zeroWhole(fullStart / cs, (fullEnd - fullStart) / cs, unmap);
    if (fullEnd < end) await this.zeroPartial(fullEnd, end - fullEnd);
  }

  /** Runs `step` over clusters [first, first + count), a piece within one L2 table at a time. */
  private async byTable(first: number, count: number, step: (c: number, n: number) => Promise<void>): Promise<void> {
    const perTable = this.map.l2Entries;
    for (let c = first; c < first + count; ) {
      const n = Math.min(first + count - c, (Math.floor(c / perTable) + 1) * perTable - c);
      await step(c, n);
      c += n;
    }
  }

  private async zeroWhole(first: number, count: number, unmap: boolean): Promise<void> {
    const v3 = this.header.version === VERSION_3;
    await this.byTable(first, count, async (c, n) => {
      if (v3) {
        await this.lock.run(() => this.map.zeroClusters(c, n, unmap));
      } else if (!this.backing() && unmap) {
        await this.lock.run(() => this.map.deallocateClusters(c, n));
      } else {
        const cs = this.header.clusterSize;
        const start = c * cs;
        const stop = Math.min(this.size, (c + n) * cs);
        if (!(await this.reader.readsAsZero(start, stop - start))) await this.writeZeroData(start, stop - start);
      }
    });
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
    if (await this.reader.readsAsZero(offset, bytes)) return;
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
      await this.write(offset + done, piece.subarray(0, Math.min(piece.length, bytes - done)));
    }
  }

  /** Discards whole clusters [first, first + count) as QEMU's qcow2 discard, one L2 table at a time. */
  async discardClusters(first: number, count: number): Promise<void> {
    await this.byTable(first, count, (c, n) => this.lock.run(() => this.map.discardClusters(c, n)));
  }

  /**
   * Makes [offset, offset + bytes) read from the backing image again (a full
   * discard): whole clusters are unmapped, whole subclusters (extended L2)
   * unallocated, and what remains of partial clusters gets the backing
   * image's bytes written.
   */
  async deallocate(offset: number, bytes: number): Promise<void> {
    const cs = this.header.clusterSize;
    const end = offset + bytes;
    const { start: fullStart, end: fullEnd } = this.wholeClusters(offset, bytes);
    if (fullEnd > fullStart) {
      await this.byTable(fullStart / cs, (fullEnd - fullStart) / cs, (c, n) => this.lock.run(() => this.map.fullDiscardClusters(c, n)));
      if (offset < fullStart) await this.deallocatePartial(offset, fullStart - offset);
      if (fullEnd < end) await this.deallocatePartial(fullEnd, end - fullEnd);
    } else {
      const split = Math.min(end, fullStart);
      await this.deallocatePartial(offset, split - offset);
      if (split < end) await this.deallocatePartial(split, end - split);
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
    await this.reader.readBacking(offset, data);
    await this.write(offset, data);
  }
}
