/**
 * Where the soak's guest writes land: anywhere at random; across a cluster
 * boundary; or into clusters a qcow2 overlay does not hold yet while its
 * backing file does, starting inside one and ending inside a later one.
 * Such a write allocates clusters in the overlay (the backing file's bytes
 * around the guest's copied up, an L2 entry updated per cluster): metadata
 * a crash can take back if it was never flushed, which a mirror's
 * checkpoint must not have promised to the target.
 *
 * What the overlay holds is read from `qemu-img map` when the images are
 * made and after every kill, and between those follows the writes the job
 * acknowledged. A map read after a kill also tells which clusters those
 * writes allocated the kill took back (they read from the backing file
 * again).
 */
import type { MapExtent } from '../src/format/map.js';

export type Placement = 'anywhere' | 'boundary' | 'backing-gap';

export interface GuestWrite {
  offset: number;
  bytes: number;
  placement: Placement;
}

const SECTOR = 512;
const KiB = 1024;

/** Per cluster: the overlay holds it, only a backing file does, or nothing in the chain. */
const OVERLAY = 2;
const BACKING = 1;
const NOTHING = 0;

export class GuestPlacer {
  private readonly held: Uint8Array;
  /** Clusters the overlay did not hold that writes acknowledged since the last map have allocated. */
  private allocated = new Set<number>();

  constructor(
    private readonly size: number,
    /** The overlay's cluster size (qcow2) or the boundary a raw image's writes straddle. */
    private readonly clusterBytes: number,
    /** A qcow2 overlay over a backing file: backing gaps exist. */
    private readonly layered: boolean,
    private readonly rand: () => number,
  ) {
    this.held = new Uint8Array(Math.ceil(size / clusterBytes));
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  /**
   * Takes what the overlay holds from `qemu-img map`; returns how many
   * clusters that acknowledged writes had allocated it no longer holds.
   */
  load(map: MapExtent[]): number {
    this.held.fill(NOTHING);
    const cs = this.clusterBytes;
    for (const e of map) {
      const state = e.depth === 0 ? OVERLAY : e.present ? BACKING : NOTHING;
      if (state === NOTHING) continue;
      const last = Math.ceil((e.start + e.length) / cs);
      for (let c = Math.floor(e.start / cs); c < last && c < this.held.length; c++) this.held[c] = Math.max(this.held[c]!, state);
    }
    let lost = 0;
    for (const c of this.allocated) if (this.held[c] !== OVERLAY) lost++;
    this.allocated = new Set();
    return lost;
  }

  /** A write the job acknowledged: the overlay holds every cluster it touched. */
  landed(w: GuestWrite): void {
    if (!this.layered) return;
    const cs = this.clusterBytes;
    for (let c = Math.floor(w.offset / cs); c * cs < w.offset + w.bytes; c++) {
      if (this.held[c] !== OVERLAY) this.allocated.add(c);
      this.held[c] = OVERLAY;
    }
  }

  /** Clusters a write touches. */
  clusters(w: GuestWrite): number {
    const cs = this.clusterBytes;
    return Math.floor((w.offset + w.bytes - 1) / cs) - Math.floor(w.offset / cs) + 1;
  }

  pick(placement: Placement): GuestWrite {
    if (placement === 'backing-gap' && this.layered) {
      const w = this.intoBackingGap();
      if (w) return w;
      placement = 'boundary';
    }
    if (placement === 'boundary' && this.size > this.clusterBytes) return this.acrossBoundary();
    const bytes = Math.min(this.int(1, 64) * 4 * KiB, this.size);
    const offset = Math.floor(this.rand() * ((this.size - bytes) / SECTOR + 1)) * SECTOR;
    return { offset, bytes, placement: 'anywhere' };
  }

  /** From inside one cluster to inside another, a few sectors to 64 KiB on either side of the boundary. */
  private acrossBoundary(): GuestWrite {
    const cs = this.clusterBytes;
    const boundary = this.int(1, Math.floor((this.size - 1) / cs)) * cs;
    const side = Math.min(cs, 64 * KiB) / SECTOR;
    const before = this.int(1, side) * SECTOR;
    const after = Math.min(this.int(1, side) * SECTOR, this.size - boundary);
    return { offset: boundary - before, bytes: before + after, placement: 'boundary' };
  }

  /**
   * Into a run of clusters only the backing file holds: from inside its
   * first cluster to inside one of the next three (or within the one
   * cluster of a run that short), so every cluster is partly the guest's,
   * partly the backing file's. Null when the overlay holds every such run.
   */
  private intoBackingGap(): GuestWrite | null {
    const runs: { first: number; count: number }[] = [];
    for (let c = 0; c < this.held.length; c++) {
      if (this.held[c] !== BACKING) continue;
      const run = runs.at(-1);
      if (run && run.first + run.count === c) run.count++;
      else runs.push({ first: c, count: 1 });
    }
    if (runs.length === 0) return null;
    const run = runs[Math.floor(this.rand() * runs.length)]!;
    const cs = this.clusterBytes;
    const sectors = cs / SECTOR;
    const first = run.first + (run.count > 1 ? this.int(0, run.count - 2) : 0);
    const last = Math.min(first + this.int(run.count > 1 ? 1 : 0, 3), run.first + run.count - 1);
    let offset: number;
    let end: number;
    if (first === last) {
      // One cluster: a part of it, leaving some of the backing file's bytes on one side at least.
      const a = this.int(0, sectors - 1);
      const b = this.int(a + 1, a === 0 ? sectors - 1 : sectors);
      offset = first * cs + a * SECTOR;
      end = first * cs + Math.max(b, a + 1) * SECTOR;
    } else {
      offset = first * cs + this.int(1, sectors - 1) * SECTOR;
      end = last * cs + this.int(1, sectors - 1) * SECTOR;
    }
    end = Math.min(end, this.size);
    // The image's last cluster may end before the sector drawn.
    if (end <= offset) return null;
    return { offset, bytes: end - offset, placement: 'backing-gap' };
  }
}
