/**
 * diskmirror check: qemu-img check for qcow2, vdi, vhdx and vmdk. Exit 0 clean, 2 corruptions,
 * 3 leaks only, 1 when the image cannot be checked (or opened), 63 for a
 * format without checks (raw: "This image format does not support checks",
 * as qemu-img). What it finds goes to stderr, the summary to stdout, as
 * qemu-img does; JSON carries qemu-img's keys in its order, each count only
 * when it is not zero (check-errors always). `-r leaks|all` repairs what
 * diskmirror can, as qemu-img: a vhdx log to replay (opened read-write,
 * the image replays it, and the check reports it fixed); other formats are
 * only checked, and say so.
 */
import { UsageError } from './args.js';
import type { Command } from './command.js';
import { type SingleImageArgs, openForReading, openImageFile, parseSingleImage } from './node-images.js';
import { FormatError, type ImageFormat } from '../format/image-format.js';
import { checkImage, type CheckResult } from '../format/qcow2/check.js';
import { Qcow2Image } from '../format/qcow2/image.js';
import { checkVdi } from '../format/vdi/check.js';
import { VdiImage } from '../format/vdi/image.js';
import { checkVhdx } from '../format/vhdx/check.js';
import { VhdxImage } from '../format/vhdx/image.js';
import { checkVmdk } from '../format/vmdk/check.js';
import { VmdkImage } from '../format/vmdk/image.js';

export const CHECK_EXIT = { clean: 0, failed: 1, corrupt: 2, leaks: 3, unsupported: 63 } as const;

export function checkExitCode(r: CheckResult): number {
  if (r.checkErrors > 0) return CHECK_EXIT.failed;
  if (r.corruptions > 0) return CHECK_EXIT.corrupt;
  if (r.leaks > 0) return CHECK_EXIT.leaks;
  return CHECK_EXIT.clean;
}

/**
 * part / whole as a percentage, as printf's "%0.2f" prints the double:
 * toFixed(2) but for an exact tie (the double is exactly x.xx5, as 2/64 =
 * 3.125%), which glibc rounds to the even digit (3.12) and toFixed up.
 */
export function percent(part: number, whole: number): string {
  if (whole === 0) return '0.00';
  // 100 * part / whole = m / 200 with m odd, representable only when m / 25 is (a multiple of 1/8).
  const m = (20000 * part) / whole;
  if (Number.isInteger(m) && m % 2 === 1 && m % 25 === 0) {
    const k = (m - 1) / 2; // hundredths below the tie
    return ((k % 2 === 0 ? k : k + 1) / 100).toFixed(2);
  }
  return ((part * 100) / whole).toFixed(2);
}

/** qemu-img check --output=json: keys in its order; counts that are zero are left out, check-errors is always there. */
export function checkJson(r: CheckResult, filename: string, format: string): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  const put = (key: string, value: number) => {
    if (value !== 0) json[key] = value;
  };
  put('image-end-offset', r.imageEndOffset);
  put('compressed-clusters', r.compressedClusters);
  put('total-clusters', r.totalClusters);
  put('corruptions', r.corruptions);
  json['check-errors'] = r.checkErrors;
  put('leaks', r.leaks);
  put('allocated-clusters', r.allocatedClusters);
  json.filename = filename;
  json.format = format;
  put('fragmented-clusters', r.fragmentedClusters);
  return json;
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
  if (r.totalClusters > 0 && r.allocatedClusters > 0) {
    lines.push(
      `${r.allocatedClusters}/${r.totalClusters} = ${percent(r.allocatedClusters, r.totalClusters)}% allocated, ${percent(r.fragmentedClusters, r.allocatedClusters)}% fragmented, ${percent(r.compressedClusters, r.allocatedClusters)}% compressed clusters`,
    );
  }
  if (r.imageEndOffset > 0) lines.push(`Image end offset: ${r.imageEndOffset}`);
  return lines.join('\n');
}

export const checkCommand: Command = {
  usage: 'check [-f FMT] [--output=human|json] [-U] [-r leaks|all] IMAGE',
  help: [
    'Checks a qcow2, vdi, vhdx or vmdk image for consistency, as qemu-img check does.',
    '-r leaks|all replays a vhdx log that needs it (as qemu-img check -r); nothing else is repaired.',
    'Exit status: 0 no problems, 2 corruptions, 3 leaked clusters only, 1 the check could not be done,',
    '63 the format has nothing to check (raw, vpc).',
    '-U (force share) reads without taking locks, so an image in use can be looked at (as qemu-img -U).',
  ].join('\n'),
  errorExit: CHECK_EXIT.failed,
  async run(argv) {
    const args = parseSingleImage(argv, [{ name: 'repair', short: 'r', value: true }]);
    const { path, output } = args;
    const repair = args.options.repair as string | undefined;
    if (repair !== undefined && repair !== 'leaks' && repair !== 'all') throw new UsageError(`-r must be leaks or all, not '${repair}'`);
    if (repair !== undefined && args.options['force-share']) throw new UsageError('-U cannot be used with -r: a repair writes to the image');
    const image = await openToCheck(args, repair !== undefined);
    try {
      if (!(image instanceof Qcow2Image) && !(image instanceof VdiImage) && !(image instanceof VhdxImage) && !(image instanceof VmdkImage)) {
        console.error('diskmirror check: This image format does not support checks');
        return CHECK_EXIT.unsupported;
      }
      const r = image instanceof VdiImage ? checkVdi(image) : image instanceof VhdxImage ? checkVhdx(image) : image instanceof VmdkImage ? await checkVmdk(image) : await checkImage(image);
      for (const m of r.messages) console.error(m);
      // vmdk: a grain past the end fails the check itself, as qemu-img's (no summary).
      if ('failure' in r && r.failure) {
        console.error(`diskmirror check: Check failed: ${r.failure}`);
        return CHECK_EXIT.failed;
      }
      if (r.messages.length < r.corruptions + r.leaks + r.checkErrors) {
        console.error(`(${r.corruptions + r.leaks + r.checkErrors - r.messages.length} more findings not shown)`);
      }
      const fixed = image instanceof VhdxImage && image.logReplayed ? 1 : 0;
      if (output === 'json') {
        const json = Object.entries(checkJson(r, path, image.format));
        if (fixed > 0) json.splice(json.findIndex(([key]) => key === 'check-errors'), 0, ['corruptions-fixed', fixed]);
        console.log(JSON.stringify(Object.fromEntries(json), null, 4));
      } else {
        if (fixed > 0) console.log(`The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    ${fixed} corruptions\n\nDouble checking the fixed image now...`);
        console.log(summary(r));
      }
      if (r.checkErrors > 0) console.error('diskmirror check: the check could not read everything it needed');
      return checkExitCode(r);
    } finally {
      await image.close();
    }
  },
};

/**
 * The image, opened to be checked: read-only, unless -r is given and it is
 * a vhdx with a log to replay (qemu-img check -r opens it read-write, which
 * replays the log).
 */
async function openToCheck(args: SingleImageArgs, repair: boolean): Promise<ImageFormat> {
  try {
    return await openForReading(args, { forCheck: true });
  } catch (err) {
    if (!repair || !(err instanceof FormatError) || err.field !== 'log') throw err;
    return openImageFile(args.path, { format: 'vhdx', forCheck: true });
  }
}
