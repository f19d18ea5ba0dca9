/**
 * qemu-img check for VMDK (QEMU's vmdk_co_check): every grain of every
 * extent, in guest order, must lie before the end of its file (a flat
 * extent: its start). The first that does not ends the check with
 * "ERROR: cluster offset for sector N points after EOF" and the check
 * fails (qemu-img: "Check failed: Invalid argument", exit 1); nothing
 * else is looked at, nothing is repaired.
 */
import type { CheckResult } from '../qcow2/check.js';
import { GTE_ZEROED, SECTOR_BYTES } from './constants.js';
import type { VmdkImage } from './image.js';

export interface VmdkCheckResult extends CheckResult {
  /** Why the check failed (qemu-img's words after "Check failed: "), if it did. */
  failure?: string;
}

export async function checkVmdk(image: VmdkImage): Promise<VmdkCheckResult> {
  const result: VmdkCheckResult = { corruptions: 0, leaks: 0, checkErrors: 0, messages: [], totalClusters: 0, allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0, imageEndOffset: 0 };
  const afterEof = (sector: number) => {
    result.messages.push(`ERROR: cluster offset for sector ${sector} points after EOF`);
    result.corruptions = 1;
    result.failure = 'Invalid argument';
  };
  for (const extent of image.extents) {
    const firstSector = extent.start / SECTOR_BYTES;
    if (extent.flat) {
      if (extent.flatOffset >= extent.file.size) return afterEof(firstSector), result;
      continue;
    }
    const { sparse } = extent;
    const grainSectors = sparse.header.grainSectors;
    let bad = -1;
    await sparse.forEachEntry((grainIndex, entry) => {
      if (bad >= 0 || entry === 0 || (entry === GTE_ZEROED && sparse.header.hasZeroGrain)) return;
      if (grainIndex * grainSectors >= sparse.header.capacitySectors) return;
      if (entry * SECTOR_BYTES >= sparse.file.size) bad = grainIndex;
    });
    if (bad >= 0) return afterEof(firstSector + bad * grainSectors), result;
  }
  return result;
}
