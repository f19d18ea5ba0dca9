/**
 * qemu-img check for VDI: every allocated block map entry inside the image
 * and used by one block only, and blocks_allocated the count of them. The
 * messages are qemu-img's; nothing is repaired.
 */
import type { CheckResult } from '../qcow2/check.js';
import { isAllocated, type VdiImage } from './image.js';

/** Most messages kept (the counts stay exact). */
const MAX_MESSAGES = 1000;

export function checkVdi(image: VdiImage): CheckResult {
  const { bmap, blocksInImage, blocksAllocated } = image.mapForCheck();
  const messages: string[] = [];
  let corruptions = 0;
  const report = (message: string) => {
    corruptions++;
    if (messages.length < MAX_MESSAGES) messages.push(`ERROR: ${message}`);
  };
  const owner = new Int32Array(blocksInImage).fill(-1);
  let allocated = 0;
  bmap.forEach((entry, block) => {
    if (!isAllocated(entry)) return;
    if (entry >= blocksInImage) return report(`block index ${block} too large, is ${entry}`);
    allocated++;
    if (owner[entry] !== -1) report(`block index ${owner[entry]} also used by ${block}`);
    else owner[entry] = block;
  });
  if (allocated !== blocksAllocated) report(`allocated blocks mismatch, is ${allocated}, should be ${blocksAllocated}`);
  return { corruptions, leaks: 0, checkErrors: 0, messages, totalClusters: 0, allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0, imageEndOffset: 0 };
}
