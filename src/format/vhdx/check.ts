/**
 * qemu-img check for VHDX: every block the BAT places in the file inside
 * it (and clear of the header section, the log and the regions), each
 * problem a corruption, in qemu-img's words; a log replayed when the image
 * was opened counts as a corruption fixed. Nothing is repaired.
 */
import type { CheckResult } from '../qcow2/check.js';
import type { VhdxImage } from './image.js';

/** Most messages kept (the count stays exact). */
const MAX_MESSAGES = 1000;

export function checkVhdx(image: VhdxImage): CheckResult {
  const problems = image.problems();
  return {
    corruptions: problems.length,
    leaks: 0,
    checkErrors: 0,
    messages: problems.slice(0, MAX_MESSAGES),
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    imageEndOffset: 0,
  };
}
