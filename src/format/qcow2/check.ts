/**
 * Consistency check (QEMU's qcow2_check_refcounts and friends): count every
 * reference the metadata makes, compare with the stored refcounts, check
 * COPIED flags. Counts as qemu-img check does: corruptions (a refcount below
 * its references, bad entries), leaks (a refcount above its references),
 * and check errors (the check itself could not read something).
 *
 * The counting is shared with repair.ts, which sets every refcount to its
 * reference count and fixes COPIED flags.
 */
import { bigU64, getU64, u32 } from './bytes.js';
import type { MetadataIo } from './cache.js';
import type { ClusterMap } from './cluster.js';
import {
  BITMAP_DIR_ENTRY_BYTES,
  L1E_BYTES,
  L1E_RESERVED_HI,
  L1E_RESERVED_LO,
  L2E_RESERVED_HI,
  L2E_RESERVED_LO,
  MAX_BITMAPS,
  MAX_L1_BYTES,
  REFT_ENTRY_BYTES,
  REFT_RESERVED_LO,
  VERSION_3,
} from './constants.js';
import type { Qcow2Header } from './header.js';
import { classifyL2, entryOffset, isCopied, parseCompressed, parseL1, readL2Entry } from './l2-entry.js';
import { getRefcountEntry, type Refcounts } from './refcount.js';
import type { SnapshotTable } from './snapshot.js';

/** What check (and repair) need of an open image: a Qcow2Image has all of it. */
export interface CheckTarget {
  readonly header: Qcow2Header;
  readonly file: { readonly size: number };
  readonly io: MetadataIo;
  readonly map: ClusterMap;
  readonly readOnly: boolean;
  snapshots(): Promise<SnapshotTable>;
  refcounts(): Promise<Refcounts>;
  /** Writes what the caches hold (check reads tables from the file). */
  flush(): Promise<void>;
}

export interface CheckResult {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  /** What was found, one line each (as qemu-img check prints them). */
  messages: string[];
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  imageEndOffset: number;
}

/** Most messages kept (the counts stay exact). */
const MAX_MESSAGES = 1000;

class Counter {
  readonly counts: Uint8Array | Uint16Array | Uint32Array;
  readonly max: number;
  constructor(
    readonly nbClusters: number,
    readonly clusterBits: number,
    readonly fileBytes: number,
    bits: number,
    private readonly result: CheckResult,
  ) {
    this.counts = bits <= 8 ? new Uint8Array(nbClusters) : bits <= 16 ? new Uint16Array(nbClusters) : new Uint32Array(nbClusters);
    this.max = Math.min(bits >= 32 ? 0xffffffff : 2 ** bits - 1, 0xffffffff);
  }

  /** Counts `times` references to every cluster [offset, offset + bytes) touches. */
  inc(offset: number, bytes: number, times = 1): void {
    if (bytes <= 0 || times <= 0) return;
    const cs = 2 ** this.clusterBits;
    if (offset + bytes - this.fileBytes >= cs) {
      report(this.result, 'corruptions', `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offset.toString(16)} size 0x${bytes.toString(16)}`, times);
      return;
    }
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + bytes - 1) / cs);
    for (let k = first; k <= last; k++) {
      if (k >= this.nbClusters) continue; // within the half-used last cluster
      const now = this.counts[k]!;
      if (now + times > this.max) {
        report(this.result, 'corruptions', `ERROR: overflow cluster offset=0x${(k * cs).toString(16)}`, now + times - this.max);
        this.counts[k] = this.max;
        continue;
      }
      this.counts[k] = now + times;
    }
  }
}

function report(result: CheckResult, kind: 'corruptions' | 'leaks' | 'checkErrors', message: string, times = 1): void {
  result[kind] += times;
  if (result.messages.length < MAX_MESSAGES) result.messages.push(times > 1 ? `${message} (${times} times)` : message);
}

/** Reads the stored refcounts, block by block, remembering blocks that cannot be read. */
export class StoredRefcounts {
  private readonly table: Float64Array;
  private readonly bad: Uint8Array;
  private readonly perBlock: number;
  private cachedIndex = -1;
  private cached: Uint8Array | null = null;
  constructor(
    private readonly image: CheckTarget,
    raw: Uint8Array,
  ) {
    const h = image.header;
    const entries = raw.length / REFT_ENTRY_BYTES;
    this.table = new Float64Array(entries);
    this.bad = new Uint8Array(entries);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let t = 0; t < entries; t++) {
      const hi = view.getUint32(t * 8, false);
      const lo = view.getUint32(t * 8 + 4, false);
      // As QEMU: reserved bits are masked off; an unaligned block or one past 2^63 cannot be read.
      const alignedLo = (lo & ~0x1ff) >>> 0;
      this.table[t] = hi * 2 ** 32 + alignedLo;
      if (alignedLo % h.clusterSize !== 0 || hi >= 0x80000000) this.bad[t] = 1;
    }
    this.perBlock = (h.clusterSize * 8) >> h.refcountOrder;
  }

  /** Refcount of cluster `index`, or -1 when its block cannot be read. */
  async get(index: number): Promise<number> {
    const t = Math.floor(index / this.perBlock);
    if (t >= this.table.length) return 0;
    const offset = this.table[t]!;
    if (offset === 0) return 0;
    if (this.bad[t]) return -1;
    if (this.cachedIndex !== t) {
      const block = new Uint8Array(this.image.header.clusterSize);
      await this.image.io.read(offset, block);
      this.cached = block;
      this.cachedIndex = t;
    }
    return getRefcountEntry(this.cached!, index - t * this.perBlock, 1 << this.image.header.refcountOrder);
  }
}

export interface Calculated {
  result: CheckResult;
  counter: Counter;
  stored: StoredRefcounts;
  reftable: Uint8Array;
}

/** Counts every reference (QEMU's calculate_refcounts). */
export async function calculate(image: CheckTarget): Promise<Calculated> {
  const h = image.header;
  const cs = h.clusterSize;
  const fileBytes = image.file.size;
  const nbClusters = Math.ceil(fileBytes / cs);
  const result: CheckResult = {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    messages: [],
    totalClusters: Math.ceil(h.virtualSize / cs),
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    imageEndOffset: 0,
  };
  const counter = new Counter(nbClusters, h.clusterBits, fileBytes, 1 << h.refcountOrder, result);
  counter.inc(0, cs); // header

  // L2 tables are walked once each, counted as many times as L1 entries name them.
  const visits = new Map<number, { times: number; active: number }>();
  await checkL1(image, counter, result, h.l1TableOffset, h.l1Size, true, visits);

  const snapshots = await image.snapshots();
  if (h.version === VERSION_3) {
    snapshots.snapshots.forEach((sn, i) => {
      if (sn.extraBytes < 16) report(result, 'corruptions', `ERROR snapshot table entry ${i} is incomplete`);
    });
  }
  for (const sn of snapshots.snapshots) {
    if (sn.l1TableOffset >= 2 ** 63) {
      // Not a countable offset (QEMU's check fails on it as well).
      report(result, 'checkErrors', `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=0x${sn.l1TableOffset.toString(16)}: past 2^63`);
      continue;
    }
    if (sn.l1TableOffset % cs !== 0) {
      report(result, 'corruptions', `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=0x${sn.l1TableOffset.toString(16)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      continue;
    }
    if (sn.l1Size > MAX_L1_BYTES / L1E_BYTES) {
      report(result, 'corruptions', `ERROR snapshot ${sn.id} (${sn.name}) l1_size=0x${sn.l1Size.toString(16)}: L1 table is too large; snapshot table entry corrupted`);
      continue;
    }
    await checkL1(image, counter, result, sn.l1TableOffset, sn.l1Size, false, visits);
  }
  const table = new Uint8Array(cs);
  let nextContiguous = 0;
  for (const [l2Offset, v] of visits) {
    if (l2Offset >= fileBytes) continue; // reads as zeroes: no references
    await image.io.read(l2Offset, table);
    nextContiguous = checkL2(image, counter, result, table, v.times, v.active, nextContiguous);
  }
  counter.inc(h.snapshotsOffset, snapshots.bytes);

  counter.inc(h.refcountTableOffset, h.refcountTableClusters * cs);

  if (h.bitmaps && h.version === VERSION_3) await countBitmaps(image, counter, result);

  // Refcount blocks (QEMU's check_refblocks).
  const reftable = new Uint8Array(h.refcountTableClusters * cs);
  await image.io.read(h.refcountTableOffset, reftable);
  const view = new DataView(reftable.buffer);
  for (let t = 0; t < reftable.length / REFT_ENTRY_BYTES; t++) {
    const lo = view.getUint32(t * 8 + 4, false);
    const value = getU64(view, t * 8);
    const offset = value - (value % 512);
    if (lo & REFT_RESERVED_LO) {
      report(result, 'corruptions', `ERROR refcount table entry ${t} has reserved bits set`);
      continue;
    }
    if (offset % cs !== 0) {
      report(result, 'corruptions', `ERROR refcount block ${t} is not cluster aligned; refcount table entry corrupted`);
      continue;
    }
    const cluster = offset / cs;
    if (cluster >= nbClusters) {
      report(result, 'corruptions', `ERROR refcount block ${t} is outside image`);
      continue;
    }
    if (offset !== 0) {
      counter.inc(offset, cs);
      if (counter.counts[cluster] !== 1) {
        report(result, 'corruptions', `ERROR refcount block ${t} refcount=${counter.counts[cluster]}`);
      }
    }
  }
  return { result, counter, stored: new StoredRefcounts(image, reftable), reftable };
}

async function checkL1(
  image: CheckTarget,
  counter: Counter,
  result: CheckResult,
  l1Offset: number,
  l1Size: number,
  active: boolean,
  visits: Map<number, { times: number; active: number }>,
): Promise<void> {
  if (l1Size === 0) return;
  const h = image.header;
  const cs = h.clusterSize;
  counter.inc(l1Offset, l1Size * L1E_BYTES);
  // Entries past the end of the file read as zeroes: only the part inside is read.
  const inside = Math.max(0, Math.min(l1Size, Math.ceil((image.file.size - l1Offset) / L1E_BYTES)));
  const raw = new Uint8Array(inside * L1E_BYTES);
  await image.io.read(l1Offset, raw);
  const l1 = parseL1(raw);
  for (let i = 0; i < inside; i++) {
    const hi = l1[i * 2]!;
    const lo = l1[i * 2 + 1]!;
    if (hi === 0 && lo === 0) continue;
    if (hi & L1E_RESERVED_HI || lo & L1E_RESERVED_LO) {
      report(result, 'corruptions', `ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
    }
    const l2Offset = entryOffset(hi, lo);
    counter.inc(l2Offset, cs);
    if (l2Offset % cs !== 0) {
      report(result, 'corruptions', `ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
    }
    const v = visits.get(l2Offset) ?? { times: 0, active: 0 };
    v.times++;
    if (active) v.active++;
    visits.set(l2Offset, v);
  }
}

/** Counts the references of one L2 table, `times` over (`active` of them from the active L1). */
function checkL2(image: CheckTarget, counter: Counter, result: CheckResult, table: Uint8Array, times: number, active: number, nextContiguous: number): number {
  const h = image.header;
  const cs = h.clusterSize;
  for (let i = 0; i < h.l2Entries; i++) {
    const [hi, lo, bmHi, bmLo] = readL2Entry(table, i, h.extendedL2);
    const kind = classifyL2(hi, lo, h.extendedL2);
    if (kind !== 'compressed' && (hi & L2E_RESERVED_HI || lo & L2E_RESERVED_LO)) {
      report(result, 'corruptions', `ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`, times);
    }
    switch (kind) {
      case 'compressed': {
        const d = parseCompressed(hi, lo, h.clusterBits);
        if (isCopied(hi)) {
          report(result, 'corruptions', `ERROR: coffset=0x${d.hostOffset.toString(16)}: copied flag must never be set for compressed clusters`, times);
        }
        if (bmHi !== 0 || bmLo !== 0) {
          report(result, 'corruptions', `ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=${hex64(hi, lo)}`, times);
          break;
        }
        counter.inc(d.hostOffset, d.bytes, times);
        result.allocatedClusters += active;
        result.compressedClusters += active;
        result.fragmentedClusters += active;
        break;
      }
      case 'zero-alloc':
      case 'normal': {
        const offset = entryOffset(hi, lo);
        if ((bmHi & bmLo) !== 0) {
          report(result, 'corruptions', `ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`, times);
        }
        if (offset % cs !== 0) {
          const containsData = h.extendedL2 ? bmLo !== 0 : kind === 'normal';
          report(
            result,
            'corruptions',
            containsData
              ? `ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`
              : `ERROR offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`,
            times,
          );
        }
        if (active > 0) {
          result.allocatedClusters += active;
          if (nextContiguous && offset !== nextContiguous) result.fragmentedClusters += active;
          nextContiguous = offset + cs;
        }
        counter.inc(offset, cs, times);
        break;
      }
      case 'unallocated':
        if (bmLo !== 0) report(result, 'corruptions', 'ERROR: Unallocated cluster has non-zero subcluster allocation bitmap', times);
        break;
      case 'zero-plain':
        break;
    }
  }
  return nextContiguous;
}

async function countBitmaps(image: CheckTarget, counter: Counter, result: CheckResult): Promise<void> {
  const b = image.header.bitmaps!;
  if (b.nbBitmaps > MAX_BITMAPS || b.directoryBytes > 64 << 20) {
    report(result, 'checkErrors', `ERROR bitmaps extension: ${b.nbBitmaps} bitmaps, directory of ${b.directoryBytes} bytes: too large`);
    return;
  }
  counter.inc(b.directoryOffset, b.directoryBytes);
  const dir = new Uint8Array(b.directoryBytes);
  await image.io.read(b.directoryOffset, dir);
  const view = new DataView(dir.buffer);
  let at = 0;
  const cs = image.header.clusterSize;
  for (let n = 0; n < b.nbBitmaps && at + BITMAP_DIR_ENTRY_BYTES <= dir.length; n++) {
    const tableOffset = getU64(view, at);
    const tableEntries = view.getUint32(at + 8, false);
    const nameBytes = view.getUint16(at + 18, false);
    const extraBytes = view.getUint32(at + 20, false);
    if (tableEntries * 8 > 64 << 20) {
      report(result, 'corruptions', `ERROR bitmap ${n} table of ${tableEntries} entries: too large`);
      break;
    }
    counter.inc(tableOffset, tableEntries * 8);
    const table = new Uint8Array(tableEntries * 8);
    await image.io.read(tableOffset, table);
    for (let e = 0; e < tableEntries; e++) {
      const offset = entryOffset(u32(table, e * 8), u32(table, e * 8 + 4));
      if (offset !== 0) counter.inc(offset, cs);
    }
    at += Math.ceil((BITMAP_DIR_ENTRY_BYTES + extraBytes + nameBytes) / 8) * 8;
  }
}

function hex64(hi: number, lo: number): string {
  return bigU64(hi, lo).toString(16);
}

/** Checks the image as qemu-img check does. */
export async function checkImage(image: CheckTarget): Promise<CheckResult> {
  if (!image.readOnly) await image.flush();
  const { result, counter, stored } = await calculate(image);
  const cs = image.header.clusterSize;
  let highest = 0;
  for (let i = 0; i < counter.nbClusters; i++) {
    const refcount = await stored.get(i);
    if (refcount < 0) {
      report(result, 'checkErrors', `Can't get refcount for cluster ${i}: Input/output error`);
      continue;
    }
    const references = counter.counts[i]!;
    if (refcount > 0 || references > 0) highest = i;
    if (refcount !== references) {
      if (refcount < references) report(result, 'corruptions', `ERROR cluster ${i} refcount=${refcount} reference=${references}`);
      else report(result, 'leaks', `Leaked cluster ${i} refcount=${refcount} reference=${references}`);
    }
  }
  await checkCopied(image, stored, result, null);
  result.imageEndOffset = (highest + 1) * cs;
  return result;
}

/** COPIED must be set exactly when the refcount is 1 (active L1 and its L2 tables); `fix` rewrites wrong flags. */
export async function checkCopied(image: CheckTarget, stored: StoredRefcounts, result: CheckResult, fix: ((what: 'l1' | 'l2', index: number, l2Offset: number, copied: boolean) => Promise<void>) | null): Promise<void> {
  const h = image.header;
  const cs = h.clusterSize;
  const l1 = image.map.l1;
  const table = new Uint8Array(cs);
  const named = new Map<number, number>(); // L2 offset -> how many L1 entries name it
  for (let i = 0; i < l1.length / 2; i++) {
    const hi = l1[i * 2]!;
    const lo = l1[i * 2 + 1]!;
    const l2Offset = entryOffset(hi, lo);
    if (l2Offset === 0) continue;
    const refcount = await stored.get(Math.floor(l2Offset / cs));
    if (refcount >= 0 && (refcount === 1) !== isCopied(hi)) {
      if (fix) await fix('l1', i, l2Offset, refcount === 1);
      else report(result, 'corruptions', `ERROR OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(hi, lo)} refcount=${refcount}`);
    }
    named.set(l2Offset, (named.get(l2Offset) ?? 0) + 1);
  }
  for (const [l2Offset, times] of named) {
    if (l2Offset >= image.file.size) continue; // reads as zeroes
    await image.io.read(l2Offset, table);
    for (let j = 0; j < h.l2Entries; j++) {
      const [ehi, elo] = readL2Entry(table, j, h.extendedL2);
      const kind = classifyL2(ehi, elo, h.extendedL2);
      if (kind !== 'normal' && kind !== 'zero-alloc') continue;
      const rc = await stored.get(Math.floor(entryOffset(ehi, elo) / cs));
      if (rc < 0) continue;
      if ((rc === 1) !== isCopied(ehi)) {
        if (fix) await fix('l2', j, l2Offset, rc === 1);
        else report(result, 'corruptions', `ERROR OFLAG_COPIED data cluster: l2_entry=${hex64(ehi, elo)} refcount=${rc}`, times);
      }
    }
  }
}
