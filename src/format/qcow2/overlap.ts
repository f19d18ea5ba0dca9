/**
 * QEMU's metadata overlap check (qcow2_check_metadata_overlap, in
 * qcow2-refcount.c): clusters the refcounts call free, about to be
 * allocated, must not hold the header, an L1 table, the refcount table or a
 * refcount block, the snapshot table or an active L2 table. If they do, the
 * refcounts are wrong and the image is corrupt.
 */
import { L1E_BYTES } from './constants.js';
import type { Qcow2Header } from './header.js';
import type { Refcounts } from './refcount.js';
import type { SnapshotTable } from './snapshot.js';

/** Where an open image's metadata lies. */
export interface MetadataLayout {
  readonly header: Qcow2Header;
  readonly refcounts: Pick<Refcounts, 'tableOffset' | 'tableClusters' | 'hasBlockIn'>;
  /** Whether an active L2 table lies in clusters [first, first + count). */
  hasL2In(first: number, count: number): boolean;
  snapshots(): Promise<SnapshotTable>;
}

/** The metadata that clusters [first, first + count) hold ('the header', 'a refcount block', ...), or null if none. */
export async function metadataOverlap(layout: MetadataLayout, first: number, count: number): Promise<string | null> {
  const h = layout.header;
  const cs = h.clusterSize;
  const start = first * cs;
  const end = (first + count) * cs;
  const overlaps = (offset: number, bytes: number) => bytes > 0 && offset < end && start < offset + bytes;
  const refcounts = layout.refcounts;
  if (start < cs) return 'the header';
  if (overlaps(h.l1TableOffset, h.l1Size * L1E_BYTES)) return 'the active L1 table';
  if (overlaps(refcounts.tableOffset, refcounts.tableClusters * cs)) return 'the refcount table';
  if (refcounts.hasBlockIn(first, count)) return 'a refcount block';
  if (layout.hasL2In(first, count)) return 'an active L2 table';
  if (h.nbSnapshots > 0) {
    const sn = await layout.snapshots();
    if (overlaps(h.snapshotsOffset, sn.bytes)) return 'the snapshot table';
    for (const s of sn.snapshots) if (overlaps(s.l1TableOffset, s.l1Size * L1E_BYTES)) return `the L1 table of snapshot ${s.name}`;
  }
  return null;
}
