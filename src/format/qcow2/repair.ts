/**
 * Repair (QEMU's qcow2_check_refcounts with BDRV_FIX_LEAKS and
 * BDRV_FIX_ERRORS, and the dirty-image repair of qcow2_do_open): every
 * refcount is set to the references that check.ts counts, then COPIED
 * flags follow the new counts, through the refcount and map modules.
 * An image with corruptions a refcount change cannot fix is refused.
 */
import { FormatError } from '../image-format.js';
import { calculate, type CheckTarget, checkCopied, checkImage, StoredRefcounts } from './check.js';
import { INCOMPAT_DIRTY } from './constants.js';
import { type HeaderFile, setIncompatibleFeature } from './header.js';
import { getRefcountEntry, setRefcountEntry } from './refcount.js';

/** What the dirty-image repair needs besides: the file, to clear the dirty bit. */
export interface RepairTarget extends CheckTarget {
  readonly file: HeaderFile & { readonly size: number; flush(): Promise<void> };
}

/**
 * Rebuilds refcounts from the references (a dirty image after lazy
 * refcounts, or leaks), then fixes COPIED flags. Refuses an image with
 * corruptions a refcount change cannot fix. Returns how many clusters past
 * the end of the file it gave back (freePastEnd).
 */
export async function repairRefcounts(image: CheckTarget): Promise<number> {
  // The count reads tables from the file: what the caches hold goes there first.
  if (!image.readOnly) await image.flush();
  const { result, counter } = await calculate(image);
  if (result.corruptions > 0 || result.checkErrors > 0) {
    throw new FormatError(`qcow2 image is dirty and could not be repaired: ${result.messages[0] ?? 'corrupt metadata'}`, 'incompatible_features');
  }
  const refcounts = await image.refcounts();
  for (let i = 0; i < counter.nbClusters; i++) {
    const want = counter.counts[i]!;
    const t = Math.floor(i / refcounts.perBlock);
    if (refcounts.blockOffset(t) === 0) {
      if (want === 0) continue;
      throw new FormatError(`qcow2 image is dirty and cluster ${i} has no refcount block; it could not be repaired`, 'refcount_table');
    }
    if ((await refcounts.get(i)) !== want) await refcounts.set(i, want);
  }
  const pastEnd = await freePastEnd(image);
  await refcounts.flush();
  // COPIED flags follow the repaired counts.
  const stored = new StoredRefcounts(image, await readReftable(image));
  await checkCopied(image, stored, result, async (what, index, l2Offset, copied) => {
    if (what === 'l1') await image.map.setL1Copied(index, copied);
    else await image.map.setL2Copied(l2Offset, index, copied);
  });
  await image.map.l2Cache.flush();
  return pastEnd;
}

/**
 * Zeroes the refcounts of clusters past the end of the file (in the
 * refcount blocks there are) and returns how many were in use. A kill
 * between a cluster's allocation (its refcount stored) and its first write
 * leaves one there: nothing references it (a reference past the end is a
 * corruption to check), yet check does not see it, as QEMU's does not (both
 * compare the clusters of the file only). Left counted, the allocator steps
 * over it, the file grows past it, and a finished copy checks with a leak.
 */
async function freePastEnd(image: CheckTarget): Promise<number> {
  const refcounts = await image.refcounts();
  const first = Math.ceil(image.file.size / image.header.clusterSize);
  let freed = 0;
  for (let t = Math.floor(first / refcounts.perBlock); t < refcounts.tableEntries; t++) {
    const offset = refcounts.blockOffset(t);
    if (offset === 0) continue;
    // One block read, its entries scanned and zeroed with no await between (the cache keeps it until marked).
    const block = await refcounts.cache.get(offset);
    let changed = false;
    for (let i = Math.max(0, first - t * refcounts.perBlock); i < refcounts.perBlock; i++) {
      if (getRefcountEntry(block, i, refcounts.bits) === 0) continue;
      setRefcountEntry(block, i, refcounts.bits, 0);
      changed = true;
      freed++;
    }
    if (changed) refcounts.cache.markDirty(offset);
  }
  return freed;
}

/** The refcount table as it is on disk now. */
async function readReftable(image: CheckTarget): Promise<Uint8Array> {
  const refcounts = await image.refcounts();
  const raw = new Uint8Array(refcounts.tableClusters * image.header.clusterSize);
  await image.io.read(refcounts.tableOffset, raw);
  return raw;
}

/**
 * Gives leaked clusters back (`qemu-img check -r leaks`) in a writable
 * image; refuses (FormatError) when the check finds corruption. Returns how
 * many leaks there were.
 */
export async function freeLeaks(image: CheckTarget): Promise<number> {
  const result = await checkImage(image);
  if (result.corruptions > 0 || result.checkErrors > 0) {
    throw new FormatError(`the target is corrupt, not only leaking: ${result.messages[0] ?? 'corrupt metadata'} (run diskmirror check)`, 'refcounts');
  }
  // Leaks past the end of the file are not among the check's: they are given back either way.
  let pastEnd: number;
  if (result.leaks > 0) pastEnd = await repairRefcounts(image);
  else {
    pastEnd = await freePastEnd(image);
    if (pastEnd > 0) await (await image.refcounts()).flush();
  }
  if (result.leaks + pastEnd > 0) await image.flush();
  return result.leaks + pastEnd;
}

/** A dirty image (lazy refcounts, not closed cleanly) opened for writing: rebuild the refcounts, then clear the dirty bit. */
export async function repairDirty(image: RepairTarget): Promise<void> {
  await repairRefcounts(image);
  await setIncompatibleFeature(image.file, image.header, INCOMPAT_DIRTY, false);
  await image.file.flush();
}
