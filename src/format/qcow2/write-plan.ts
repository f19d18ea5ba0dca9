/**
 * Planning a guest write on the map (QEMU's qcow2_alloc_host_offset with
 * handle_copied and handle_alloc, then qcow2_alloc_cluster_link_l2): per
 * cluster, whether it is written in place or to a new cluster (copy-on-write
 * of shared and compressed clusters, subclusters with extended L2), which
 * old content must be copied first, and the entries linked once the data
 * is written.
 *
 * `prepareWrite`, `commitWrite` and `abortWrite` run under the image's
 * metadata lock; the data I/O happens between them, outside it.
 */
import { FormatError } from '../image-format.js';
import type { ClusterMap } from './cluster.js';
import { OFLAG_ZERO_LO, SUBCLUSTERS_PER_CLUSTER, VERSION_3 } from './constants.js';
import { classifyL2, entryOffset, isCopied, makeEntry, readL2Entry, subclusterKind, subclusterMask } from './l2-entry.js';

/** One guest cluster of a planned write. */
export interface ClusterWrite {
  l2Index: number;
  /** Guest offset of the cluster. */
  guestOffset: number;
  /** The bytes written, within the cluster. */
  from: number;
  to: number;
  /** Host cluster the data goes to. */
  hostOffset: number;
  /** Newly allocated for this write. */
  allocated: boolean;
  /** Allocated from space never written (reads as zeroes). */
  fresh: boolean;
  /** Ranges within the cluster to fill with the old content first. */
  fills: Array<[number, number]>;
  /** Entry after the write. */
  hi: number;
  lo: number;
  bmHi: number;
  bmLo: number;
  changed: boolean;
  /** The old entry, if its host cluster loses this reference. */
  freeHi: number;
  freeLo: number;
  free: boolean;
}

export interface WritePlan {
  l2Offset: number;
  clusters: ClusterWrite[];
  /** First host cluster index allocated, and how many (for abort). */
  allocFirst: number;
  allocCount: number;
}

/**
 * Plans a write of [offset, offset + bytes), all within one L2 table:
 * decides per cluster whether it is written in place or to a new cluster
 * (allocated here), and what old content must be copied.
 */
export async function prepareWrite(map: ClusterMap, offset: number, bytes: number, fileBytes: number): Promise<WritePlan> {
  const cs = map.clusterSize;
  const l1Index = Math.floor(offset / map.l2Coverage);
  const l2Offset = await map.writableL2(l1Index);
  const tableStart = l1Index * map.l2Coverage;
  const clusters: ClusterWrite[] = [];
  let table = await map.l2Cache.get(l2Offset);
  const end = offset + bytes;
  let needed = 0;
  for (let pos = offset; pos < end; ) {
    const l2Index = Math.floor((pos - tableStart) / cs);
    const guestOffset = tableStart + l2Index * cs;
    const from = pos - guestOffset;
    const to = Math.min(cs, end - guestOffset);
    const cw = planCluster(map, table, l2Index, guestOffset, from, to);
    if (cw.allocated) needed++;
    clusters.push(cw);
    pos = guestOffset + to;
  }
  let allocFirst = 0;
  if (needed > 0) {
    allocFirst = await map.mustRefcounts().allocate(needed);
    let next = allocFirst;
    for (const cw of clusters) {
      if (!cw.allocated) continue;
      cw.hostOffset = next * cs;
      cw.fresh = cw.hostOffset >= fileBytes;
      const [hi, lo] = makeEntry(cw.hostOffset, true);
      cw.hi = hi;
      cw.lo = lo;
      next++;
    }
  }
  table = await map.l2Cache.get(l2Offset); // (unchanged; keeps it warm)
  return { l2Offset, clusters, allocFirst, allocCount: needed };
}

/** One cluster of a write plan (host offset filled in later for new clusters). */
function planCluster(map: ClusterMap, table: Uint8Array, l2Index: number, guestOffset: number, from: number, to: number): ClusterWrite {
  const [hi, lo, bmHi, bmLo] = readL2Entry(table, l2Index, map.extendedL2);
  const kind = classifyL2(hi, lo, map.extendedL2);
  const cw: ClusterWrite = {
    l2Index,
    guestOffset,
    from,
    to,
    hostOffset: 0,
    allocated: false,
    fresh: false,
    fills: [],
    hi,
    lo,
    bmHi,
    bmLo,
    changed: false,
    freeHi: hi,
    freeLo: lo,
    free: false,
  };
  const cs = map.clusterSize;
  const inPlace = (kind === 'normal' || kind === 'zero-alloc') && isCopied(hi);
  if (kind === 'normal' || kind === 'zero-alloc') map.checkHost(entryOffset(hi, lo), guestOffset);
  if ((kind === 'zero-alloc' || kind === 'zero-plain') && map.header.version !== VERSION_3) {
    throw new FormatError(`qcow2 zero cluster entry in a version 2 image (guest offset ${guestOffset})`, 'l2_entry');
  }
  if (!map.extendedL2) {
    if (inPlace) {
      cw.hostOffset = entryOffset(hi, lo);
      if (kind === 'zero-alloc') {
        // The rest of the cluster must keep reading as zeroes.
        if (from > 0) cw.fills.push([0, from]);
        if (to < cs) cw.fills.push([to, cs]);
        cw.lo = (lo & ~OFLAG_ZERO_LO) >>> 0;
        cw.changed = true;
      }
      return cw;
    }
    cw.allocated = true;
    cw.changed = true;
    if (from > 0) cw.fills.push([0, from]);
    if (to < cs) cw.fills.push([to, cs]);
    cw.free = kind === 'normal' || kind === 'zero-alloc' || kind === 'compressed';
    return cw;
  }
  // Extended L2: work per subcluster.
  const scb = map.subclusterBytes;
  const s0 = Math.floor(from / scb);
  const s1 = Math.ceil(to / scb);
  const touched = subclusterMask(s0, s1);
  for (let s = 0; s < SUBCLUSTERS_PER_CLUSTER; s++) {
    const sk = subclusterKind(kind, true, bmHi, bmLo, s);
    if (sk === 'invalid') {
      throw new FormatError(`qcow2 extended L2 entry for guest offset ${guestOffset} has an invalid subcluster bitmap`, 'l2_bitmap');
    }
  }
  const addFill = (a: number, b: number) => {
    if (b <= a) return;
    const last = cw.fills[cw.fills.length - 1];
    if (last && last[1] === a) last[1] = b;
    else cw.fills.push([a, b]);
  };
  if (inPlace) {
    cw.hostOffset = entryOffset(hi, lo);
    for (let s = s0; s < s1; s++) {
      if (subclusterKind(kind, true, bmHi, bmLo, s) === 'normal') continue;
      // Parts of a touched subcluster outside the write keep their old content.
      const a = s * scb;
      const b = a + scb;
      addFill(a, Math.max(a, Math.min(b, from)));
      addFill(Math.min(b, Math.max(a, to)), b);
    }
    cw.fills = dedupeFills(cw.fills);
    cw.bmLo = (bmLo | touched) >>> 0;
    cw.bmHi = (bmHi & ~touched) >>> 0;
    cw.changed = cw.bmLo !== bmLo || cw.bmHi !== bmHi;
    return cw;
  }
  cw.allocated = true;
  cw.changed = true;
  cw.free = kind === 'normal' || kind === 'compressed';
  let alloc = touched;
  let zero = 0;
  for (let s = 0; s < SUBCLUSTERS_PER_CLUSTER; s++) {
    const a = s * scb;
    const b = a + scb;
    const sk = subclusterKind(kind, true, bmHi, bmLo, s);
    if (s >= s0 && s < s1) {
      addFill(a, Math.max(a, Math.min(b, from)));
      addFill(Math.min(b, Math.max(a, to)), b);
      continue;
    }
    if (sk === 'normal' || sk === 'compressed') {
      addFill(a, b);
      alloc |= 1 << s;
    } else if (sk === 'zero-plain' || sk === 'zero-alloc') {
      zero |= 1 << s;
    }
  }
  cw.fills = dedupeFills(cw.fills);
  cw.bmLo = alloc >>> 0;
  cw.bmHi = zero >>> 0;
  return cw;
}

/** Links a written plan into the L2 table, then drops old references. */
export async function commitWrite(map: ClusterMap, plan: WritePlan): Promise<void> {
  const refcounts = map.mustRefcounts();
  if (plan.allocCount > 0 && !map.lazyRefcounts) await map.l2Cache.dependOn(refcounts.cache);
  const table = await map.l2Cache.get(plan.l2Offset);
  let dirty = false;
  for (const cw of plan.clusters) {
    if (!cw.changed) continue;
    map.putEntry(table, cw.l2Index, cw.hi, cw.lo, cw.bmHi, cw.bmLo);
    dirty = true;
  }
  if (dirty) map.l2Cache.markDirty(plan.l2Offset);
  const frees = plan.clusters.filter((cw) => cw.free);
  if (frees.length > 0) {
    await refcounts.cache.dependOn(map.l2Cache);
    for (const cw of frees) await map.freeEntry(cw.freeHi, cw.freeLo);
  }
}

/** Gives back the clusters a failed write had allocated. */
export async function abortWrite(map: ClusterMap, plan: WritePlan): Promise<void> {
  if (plan.allocCount > 0) await map.mustRefcounts().free(plan.allocFirst, plan.allocCount);
}

/** Merges touching fill ranges, drops empty ones. */
function dedupeFills(fills: Array<[number, number]>): Array<[number, number]> {
  const sorted = fills.filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const f of sorted) {
    const last = out[out.length - 1];
    if (last && f[0] <= last[1]) last[1] = Math.max(last[1], f[1]);
    else out.push([f[0], f[1]]);
  }
  return out;
}
