/**
 * diskmirror check: qemu-img check for qcow2. Exit 0 clean, 2 corruptions,
 * 3 leaks only, 1 when the image cannot be checked (or opened), 63 for a
 * format without checks (raw). What it finds goes to stderr, the summary to
 * stdout, as qemu-img does.
 */
import type { Command } from './commands.js';
import { openForReading, parseSingleImage } from './node-images.js';
import { checkImage, type CheckResult } from '../format/qcow2/check.js';
import { Qcow2Image } from '../format/qcow2/image.js';

export const CHECK_EXIT = { clean: 0, failed: 1, corrupt: 2, leaks: 3, unsupported: 63 } as const;

export function checkExitCode(r: CheckResult): number {
  if (r.checkErrors > 0) return CHECK_EXIT.failed;
  if (r.corruptions > 0) return CHECK_EXIT.corrupt;
  if (r.leaks > 0) return CHECK_EXIT.leaks;
  return CHECK_EXIT.clean;
}

function pct(part: number, whole: number): string {
  return whole === 0 ? '0.00' : ((part * 100) / whole).toFixed(2);
}

function summary(r: CheckResult): string {
  const lines: string[] = [];
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) {
    lines.push('No errors were found on the image.');
  } else {
    if (r.corruptions > 0) {
      lines.push('', `${r.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
    }
    if (r.leaks > 0) {
      lines.push('', `${r.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
    }
    if (r.checkErrors > 0) lines.push('', `${r.checkErrors} internal errors have occurred during the check.`);
  }
  if (r.totalClusters > 0) {
    lines.push(
      `${r.allocatedClusters}/${r.totalClusters} = ${pct(r.allocatedClusters, r.totalClusters)}% allocated, ${pct(r.fragmentedClusters, r.allocatedClusters)}% fragmented, ${pct(r.compressedClusters, r.allocatedClusters)}% compressed clusters`,
    );
  }
  if (r.imageEndOffset > 0) lines.push(`Image end offset: ${r.imageEndOffset}`);
  return lines.join('\n');
}

export const checkCommand: Command = {
  usage: 'check [-f FMT] [--output=human|json] IMAGE',
  help: [
    'Checks a qcow2 image for consistency, as qemu-img check does (without repairing).',
    'Exit status: 0 no problems, 2 corruptions, 3 leaked clusters only, 1 the check could not be done.',
  ].join('\n'),
  errorExit: CHECK_EXIT.failed,
  async run(argv) {
    const args = parseSingleImage(argv);
    const { path, output } = args;
    const image = await openForReading(args);
    try {
      if (!(image instanceof Qcow2Image)) {
        console.error(`diskmirror check: ${image.format} images have no metadata to check`);
        return CHECK_EXIT.unsupported;
      }
      const r = await checkImage(image);
      for (const m of r.messages) console.error(m);
      if (r.messages.length < r.corruptions + r.leaks + r.checkErrors) {
        console.error(`(${r.corruptions + r.leaks + r.checkErrors - r.messages.length} more findings not shown)`);
      }
      if (output === 'json') {
        const json: Record<string, unknown> = {
          'image-end-offset': r.imageEndOffset,
          'total-clusters': r.totalClusters,
          'check-errors': r.checkErrors,
          'allocated-clusters': r.allocatedClusters,
          filename: path,
          format: 'qcow2',
          'fragmented-clusters': r.fragmentedClusters,
          'compressed-clusters': r.compressedClusters,
        };
        if (r.corruptions > 0) json.corruptions = r.corruptions;
        if (r.leaks > 0) json.leaks = r.leaks;
        console.log(JSON.stringify(json, null, 4));
      } else {
        console.log(summary(r));
      }
      if (r.checkErrors > 0) console.error('diskmirror check: the check could not read everything it needed');
      return checkExitCode(r);
    } finally {
      await image.close();
    }
  },
};
