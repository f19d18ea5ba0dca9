/**
 * diskmirror convert: a full copy of SRC into a new DST through the same
 * engine as the mirror (a MirrorJob with sync=full into a target it
 * created, completed once READY). Zero ranges are never read (block status)
 * nor written (the new target reads as zeroes). -c stores whole clusters
 * compressed (qcow2 with zlib), -p shows progress on a terminal.
 */
import { parseArgs, UsageError } from './args.js';
import type { Command } from './command.js';
import { parseCreateOptions } from './image-options.js';
import { type CacheMode, checkFormat, openImageChain, prepareImageFile, store } from './node-images.js';
import { isNbdUri } from '../block/nbd/uri.js';
import { type NewImage, refuseOverlap } from '../format/image-access.js';
import { resolveOptions } from '../mirror/options.js';
import { type FormatName, type ImageFormat, FormatError } from '../format/image-format.js';
import { ZeroPadded } from '../format/zero-padded.js';
import { type BlockOp, toBlockError } from '../block/block-device.js';
import type { EventData } from '../qapi/events.js';
import { MirrorJob } from '../mirror/mirror-job.js';
import type { BlockJobInfo } from '../mirror/types.js';
import { parseSize } from '../util/size.js';
import { ProgressLine } from './progress.js';

export interface ConvertOptions {
  sourceFormat?: FormatName;
  targetFormat: FormatName;
  create: ReturnType<typeof parseCreateOptions>;
  compress: boolean;
  onProgress?: (info: BlockJobInfo) => void;
  /** Bytes per mirror chunk (default: the target's cluster size, at least 64 KiB). */
  granularity?: number;
  /** Flushes of the target (default unsafe, as qemu-img convert). */
  cache?: CacheMode;
  /** -n: DST exists (an NBD export always does); it is written in place, not created. */
  existing?: boolean;
  /** -O as given: an existing DST without it is probed (raw for an NBD export), never assumed raw. */
  targetFormatGiven?: boolean;
}

/**
 * Converts `src` into a new image at `dst`; resolves when DST is complete and
 * closed. DST is made aside and renamed into place only when whole: a
 * failure leaves whatever DST was before untouched.
 */
export async function convertImage(src: string, dst: string, o: ConvertOptions): Promise<void> {
  // Everything that can be refused is refused before a file is touched.
  if (o.compress && o.targetFormat !== 'qcow2') throw new UsageError('-c (compressed) needs -O qcow2');
  if (o.granularity !== undefined) checkGranularity(o.granularity);
  const existing = o.existing === true || isNbdUri(dst);
  if (existing && (o.compress || Object.keys(o.create).length > 0)) throw new UsageError(`${isNbdUri(dst) ? 'an NBD target exists already' : '-n writes into DST as it is'}: -o and -c are for a new image`);
  const opened = await openImageChain(src, { readOnly: true, ...(o.sourceFormat ? { format: o.sourceFormat } : {}) });
  let source: ImageFormat = opened.image;
  let created: NewImage | undefined;
  let target: ImageFormat | undefined;
  try {
    refuseOverlap(opened, src, dst, await store.identify(dst));
    const cache = o.cache ?? 'unsafe';
    if (existing) {
      // Written in place, as a new image is: under unsafe (the default, as qemu-img's) nothing is flushed.
      target = (await openImageChain(dst, { cache, ...(o.targetFormatGiven ? { format: o.targetFormat } : {}) })).image;
      // The copy must cover the target exactly: what lies past the source would be left as it was.
      if (target.size !== source.size) throw new FormatError(`${dst} is ${target.size} bytes and ${src} is ${source.size}: -n needs a target of the source's size`);
    } else {
      const size = Math.ceil(source.size / 512) * 512;
      if (size !== source.size) source = new ZeroPadded(source, size);
      created = await prepareImageFile(dst, { format: o.targetFormat, size, ...o.create, cache, ...(o.compress ? { compress: true } : {}) });
      target = created.image;
      // A format may round the size up (vpc to a CHS geometry), as qemu-img's target: the rest reads as zeroes.
      if (target.size > source.size) source = new ZeroPadded(source, target.size);
    }
    const info = await target.info();
    const granularity = o.granularity ?? (info.clusterSize && info.clusterSize > 65536 ? info.clusterSize : undefined);
    const job = await MirrorJob.create({
      source,
      target,
      // A target written in place holds anything: every zero range is written as zeroes.
      targetCreated: !existing,
      options: { sync: 'full', id: 'convert', ...(granularity ? { granularity } : {}) },
    });
    // The error that failed the job (convert reports every error), to say which step failed.
    let failed: EventData['BLOCK_JOB_ERROR'] | null = null;
    job.on((e) => {
      if (e.event === 'BLOCK_JOB_READY') job.complete();
      if (e.event === 'BLOCK_JOB_ERROR') failed = e.data;
    });
    if (o.onProgress) job.onProgress(o.onProgress);
    job.start();
    const result = await job.result;
    if (result.outcome !== 'completed') throw new FormatError(failedStep(failed, result.error ?? result.outcome));
    await step('flushing the target', 'flush', () => target!.flush());
    await step('closing the target', 'close', () => target!.close());
    await created?.publish();
  } catch (err) {
    if (created) await created.discard();
    else await target?.close().catch(() => {});
    throw err;
  } finally {
    await source.close();
  }
}

/** What a failed copy says: the step (reading the source, writing or flushing the target) and the device's error. */
function failedStep(error: EventData['BLOCK_JOB_ERROR'] | null, fallback: string): string {
  if (!error) return `copying failed: ${fallback}`;
  // A target error without a range is its flush.
  const what = error.operation === 'read' ? 'reading the source' : error.bytes > 0 ? 'writing the target' : 'flushing the target';
  return `${what} failed: ${error.message}`;
}

/** Runs one step after the copy; a failure names it. */
async function step(what: string, op: BlockOp, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (err) {
    throw new FormatError(`${what} failed: ${toBlockError(err, op, 0, 0).message}`, undefined, { cause: err });
  }
}

/** --granularity as the job checks it, before anything is opened. */
function checkGranularity(granularity: number): void {
  try {
    resolveOptions({ sync: 'full', granularity }, { targetIsZero: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export const convertCommand: Command = {
  usage: 'convert [-f FMT] [-O FMT] [-o OPTIONS] [-c] [-n] [-p] [-q] [-t unsafe|writeback] SRC DST',
  help: [
    'Copies SRC (any format, backing chain followed) into a new image DST (format -O, default raw),',
    'with the mirror engine: zero ranges are skipped, DST is complete when this exits 0.',
    '-o takes the options of create; -c stores whole clusters compressed (qcow2, zlib); -p shows progress.',
    '-t: the cache mode of DST, created or written in place. unsafe (the default, as qemu-img convert)',
    '  skips flushes; writeback flushes as it goes and at the end, so DST is on disk when this exits',
    '  (a failed flush then fails the command).',
    '-n: DST exists and is written in place (same size as SRC); an NBD export always is.',
  ].join('\n'),
  errorExit: 1,
  async run(argv) {
    const { options, positionals } = parseArgs(argv, [
      { name: 'format', short: 'f', value: true },
      { name: 'target-format', short: 'O', value: true },
      { name: 'options', short: 'o', value: true, repeat: true },
      { name: 'compress', short: 'c' },
      { name: 'progress', short: 'p' },
      { name: 'quiet', short: 'q' },
      { name: 'granularity', value: true },
      { name: 'cache', short: 't', value: true },
      { name: 'no-create', short: 'n' },
    ]);
    if (positionals.length !== 2) throw new UsageError('expected SRC and DST');
    const [src, dst] = positionals as [string, string];
    const sourceFormat = checkFormat(options.format as string | undefined);
    const targetFormat = checkFormat((options['target-format'] as string | undefined) ?? 'raw')!;
    const create = parseCreateOptions(options.options as string[] | undefined);
    if (create.size !== undefined) throw new UsageError('convert takes the size from SRC (no size option)');
    if (create.backingFile !== undefined) throw new UsageError('convert makes a complete copy: no backing_file option');
    const compress = Boolean(options.compress);
    const cache = (options.cache as string | undefined) ?? 'unsafe';
    if (cache !== 'unsafe' && cache !== 'writeback') throw new UsageError(`-t must be unsafe or writeback, not '${cache}'`);
    // qemu-img convert -p draws on stdout, and only on a terminal.
    const bar = options.progress && !options.quiet && process.stdout.isTTY ? new ProgressLine(process.stdout) : null;
    bar?.update(0, 1);
    const granularity = options.granularity !== undefined ? parseSize(options.granularity as string, '--granularity') : undefined;
    await convertImage(src, dst, {
      ...(sourceFormat ? { sourceFormat } : {}),
      targetFormat,
      create,
      compress,
      ...(bar ? { onProgress: (info: BlockJobInfo) => bar.update(info.offset, info.len) } : {}),
      ...(granularity ? { granularity } : {}),
      cache,
      ...(options['no-create'] ? { existing: true } : {}),
      ...(options['target-format'] !== undefined ? { targetFormatGiven: true } : {}),
    });
    bar?.finish();
    return 0;
  },
};
