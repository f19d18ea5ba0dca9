/**
 * diskmirror mirror: a mirror job between two image files.
 *
 * Without --qmp it runs until READY, completes and exits 0; a stop (by
 * policy) pauses and asks, on a terminal, whether to resume or cancel, or
 * waits for "resume" or "cancel" on stdin. With --qmp it speaks QMP-shaped
 * JSON lines: events on stdout, commands on stdin, and exits when the job
 * reaches null. Either way the job checkpoints to a sidecar next to the
 * target; --resume continues from it; SIGINT and SIGTERM checkpoint and exit
 * 130.
 */
import { existsSync, renameSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs, UsageError } from './args.js';
import type { Command } from './commands.js';
import { checkFormat, createImageFile, openImageFile } from './node-images.js';
import { readSidecar, SidecarCheckpointer, sidecarPath } from './sidecar.js';
import { ProgressLine } from './progress.js';
import { EXIT, runPlain, runQmp } from './mirror-io.js';
import { FaultRules } from '../block/fault.js';
import { FaultImage } from '../format/fault-image.js';
import type { ImageFormat } from '../format/image-format.js';
import { repairLeaks } from '../format/repair.js';
import { MirrorControl } from '../mirror/control.js';
import { ERROR_POLICIES, type ErrorPolicy } from '../mirror/error-policy.js';
import { parseFaultSpec } from '../mirror/fault-spec.js';
import { MirrorJob } from '../mirror/mirror-job.js';
import { COPY_MODES, type CopyMode, type MirrorOptions, SYNC_MODES, type SyncMode } from '../mirror/options.js';
import { parseSize } from '../util/size.js';

const SPECS = [
  { name: 'format', short: 'f', value: true },
  { name: 'target-format', short: 'O', value: true },
  { name: 'sync', value: true },
  { name: 'granularity', value: true },
  { name: 'buf-size', value: true },
  { name: 'speed', value: true },
  { name: 'on-source-error', value: true },
  { name: 'on-target-error', value: true },
  { name: 'copy-mode', value: true },
  { name: 'inject', value: true, repeat: true },
  { name: 'id', value: true },
  { name: 'checkpoint-interval', value: true },
  { name: 'qmp' },
  { name: 'resume' },
  { name: 'progress', short: 'p' },
];

function oneOf<T extends string>(option: string, value: unknown, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T)) throw new UsageError(`--${option} must be one of ${allowed.join(', ')}, not '${String(value)}'`);
  return value as T;
}

interface Opened {
  source: ImageFormat;
  target: ImageFormat;
  job: MirrorJob;
  control: MirrorControl;
  sidecar: string;
}

async function open(argv: string[]): Promise<Opened & { qmp: boolean; progress: boolean }> {
  const { options: o, positionals } = parseArgs(argv, SPECS);
  if (positionals.length !== 2) throw new UsageError('expected SRC and DST');
  const [srcPath, dstPath] = positionals as [string, string];
  const size = (name: string) => (o[name] === undefined ? undefined : parseSize(o[name] as string, `--${name}`));
  const qmp = o.qmp === true;
  const sidecar = sidecarPath(dstPath);
  const checkpoint = o.resume ? readSidecar(sidecar) : null;
  if (!o.resume && existsSync(sidecar)) {
    throw new UsageError(`${dstPath} has an interrupted mirror's checkpoint (${sidecar}): continue it with --resume, or delete that file to start over`);
  }
  if (checkpoint && (checkpoint.source !== resolve(srcPath) || checkpoint.target !== resolve(dstPath))) {
    throw new UsageError(`the checkpoint ${sidecar} is for ${checkpoint.source} -> ${checkpoint.target}, not these images`);
  }
  if (checkpoint) {
    // A resumed job keeps the options it started with; only how it runs may change.
    const fixed = ['format', 'target-format', 'sync', 'granularity', 'buf-size', 'on-source-error', 'on-target-error', 'copy-mode', 'id'].filter((k) => o[k] !== undefined);
    if (fixed.length > 0) throw new UsageError(`--resume continues with the options the job started with; drop --${fixed.join(', --')}`);
  } else if (o.resume) {
    process.stderr.write(`diskmirror mirror: no checkpoint at ${sidecar}: mirroring everything\n`);
  }
  const intervalSeconds = o['checkpoint-interval'] === undefined ? 5 : Number(o['checkpoint-interval']);
  if (!(intervalSeconds > 0)) throw new UsageError(`--checkpoint-interval must be a positive number of seconds`);

  const options: MirrorOptions = checkpoint
    ? {
        // A resumed job keeps the options it was started with.
        id: checkpoint.options.id,
        sync: checkpoint.options.sync,
        granularity: checkpoint.options.granularity,
        'buf-size': checkpoint.options.bufSize,
        speed: checkpoint.options.speed,
        'on-source-error': checkpoint.options.onSourceError,
        'on-target-error': checkpoint.options.onTargetError,
        'copy-mode': checkpoint.options.copyMode,
        unmap: checkpoint.options.unmap,
        // What the target held before the interruption is not known: write zeroes where needed.
        'target-is-zero': false,
      }
    : { sync: oneOf('sync', o.sync ?? 'full', SYNC_MODES) as SyncMode };
  if (!checkpoint) {
    const policy = (name: string) => oneOf<ErrorPolicy>(name, o[name], ERROR_POLICIES);
    const set = <K extends keyof MirrorOptions>(key: K, value: MirrorOptions[K] | undefined) => {
      if (value !== undefined) options[key] = value;
    };
    set('granularity', size('granularity'));
    set('buf-size', size('buf-size'));
    set('speed', size('speed'));
    set('on-source-error', policy('on-source-error'));
    set('on-target-error', policy('on-target-error'));
    set('copy-mode', oneOf<CopyMode>('copy-mode', o['copy-mode'], COPY_MODES));
    set('id', o.id as string | undefined);
  } else if (o.speed !== undefined) {
    options.speed = size('speed')!;
  }
  const injected = ((o.inject as string[] | undefined) ?? []).map((spec) => {
    try {
      return parseFaultSpec(spec);
    } catch (err) {
      throw new UsageError(`--inject: ${(err as Error).message}`);
    }
  });

  let source: ImageFormat | undefined;
  let target: ImageFormat | undefined;
  try {
    const srcFormat = checkFormat((o.format as string | undefined) ?? checkpoint?.sourceFormat);
    // The source is written only by x-source-write (QMP mode); otherwise it is opened read-only.
    source = await openImageFile(srcPath, { readOnly: !qmp, ...(srcFormat ? { format: srcFormat } : {}) });
    const targetCreated = !existsSync(dstPath);
    if (checkpoint && targetCreated) throw new UsageError(`cannot resume: ${dstPath} no longer exists`);
    const dstFormat = checkFormat((o['target-format'] as string | undefined) ?? checkpoint?.targetFormat);
    if (targetCreated) {
      // sync=top copies only the top image: the new target sits on the source's backing file, as drive-mirror makes it.
      const format = dstFormat ?? source.format;
      const sourceInfo = await source.info();
      const onBacking = options.sync === 'top' && sourceInfo.backingFile !== undefined;
      if (onBacking && format !== 'qcow2') {
        throw new UsageError(`--sync top needs a target that can have a backing file: use -O qcow2 (the source's backing file is ${sourceInfo.backingFile})`);
      }
      const backing = onBacking
        ? { backingFile: resolve(dirname(resolve(srcPath)), sourceInfo.backingFile!), ...(sourceInfo.backingFormat ? { backingFormat: sourceInfo.backingFormat } : {}) }
        : {};
      // Made under a temporary name and renamed once whole, so an interruption
      // never leaves a half-made target behind under the real name.
      const partial = `${dstPath}.creating`;
      target = await createImageFile(partial, { format, size: source.size, ...backing });
      renameSync(partial, dstPath);
    } else {
      target = await openImageFile(dstPath, dstFormat ? { format: dstFormat } : {});
      // An interrupted job may have left leaked clusters in a qcow2 target: give them back first.
      await repairLeaks(target);
    }
    const faults = { source: new FaultRules(), target: new FaultRules() };
    for (const { side, rule } of injected) faults[side].add(rule);
    const job = await MirrorJob.create({
      source: new FaultImage(source, faults.source),
      target: new FaultImage(target, faults.target),
      options,
      targetCreated,
      ...(checkpoint ? { resume: { bitmap: checkpoint.bitmapBytes } } : {}),
      checkpointer: new SidecarCheckpointer(sidecar, {
        source: resolve(srcPath),
        target: resolve(dstPath),
        sourceFormat: source.format,
        targetFormat: target.format,
      }),
      checkpointIntervalSeconds: intervalSeconds,
    });
    const control = new MirrorControl();
    control.add(job, faults);
    return { source, target, job, control, sidecar, qmp, progress: o.progress === true };
  } catch (err) {
    await source?.close().catch(() => {});
    await target?.close().catch(() => {});
    throw err;
  }
}

export const mirrorCommand: Command = {
  usage:
    'mirror [-f FMT] [-O FMT] [--sync full|top|none] [--granularity N] [--buf-size N] [--speed N] [--on-source-error P] [--on-target-error P] [--copy-mode M] [--inject RULE]... [--qmp] [--resume] [-p] SRC DST',
  help: [
    "Mirrors SRC into DST with QEMU's mirror semantics. DST is created (format -O, default: the source's)",
    'unless it exists with the same size. Without --qmp the job completes once READY.',
    '',
    '  --sync full|top|none          what to copy (default full)',
    '  --granularity N               bytes per dirty bit (512 to 64M, a power of 2)',
    '  --buf-size N                  most data in flight (default 16M)',
    '  --speed N                     bytes per second, 0 for no limit',
    '  --on-source-error P           report, ignore, stop, enospc or auto (default report)',
    '  --on-target-error P           the same, for target writes and flushes',
    '  --copy-mode M                 background or write-blocking',
    '  --inject SIDE:OP:ERRNO:RANGE[:once]',
    '                                fail matching requests, e.g. source:read:EIO:1M:once,',
    '                                target:write:ENOSPC:2M- (2 MiB to the end), target:write:EIO:64K+4K',
    '  --qmp                         JSON events on stdout, QMP commands on stdin; never completes by itself',
    '  --resume                      continue from the checkpoint next to DST (DST.dmcheckpoint)',
    '  --checkpoint-interval S       seconds between checkpoints (default 5)',
    '  -p                            show a progress bar on a terminal',
    '',
    'Exit codes: 0 completed, 1 failed or cancelled, 2 bad usage or bad image, 130 interrupted (resumable).',
  ].join('\n'),
  errorExit: EXIT.usage,
  async run(argv) {
    const opened = await open(argv);
    const { job, source, target } = opened;
    const lines = createInterface({ input: process.stdin, terminal: false });
    const progress = opened.progress && process.stderr.isTTY ? new ProgressLine(process.stderr) : null;
    // The bar stays quiet while a paused job waits for an answer.
    if (progress) job.onProgress((p) => p.paused || progress.update(p.offset, p.len));

    let interrupted: (() => void) | null = null;
    const onSignal = () => interrupted?.();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const signalled = new Promise<'interrupted'>((r) => (interrupted = () => r('interrupted')));
    let interruptedExit = false;
    try {
      job.start();
      const outcome = await Promise.race([opened.qmp ? runQmp(opened, lines) : runPlain(opened, lines, progress), signalled]);
      if (outcome === 'interrupted') {
        progress?.clear();
        interruptedExit = true;
        const saved = await job.checkpoint();
        process.stderr.write(
          saved
            ? `diskmirror mirror: interrupted; the checkpoint is in ${opened.sidecar} (continue with --resume)\n`
            : existsSync(opened.sidecar)
              ? `diskmirror mirror: interrupted; the last checkpoint could not be updated, ${opened.sidecar} holds an earlier one (continue with --resume)\n`
              : `diskmirror mirror: interrupted before a checkpoint could be stored; run the mirror again\n`,
        );
        return EXIT.interrupted;
      }
      return outcome;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      lines.close();
      process.stdin.destroy();
      // An interrupted job still has I/O under way: the checkpoint holds what counts, and the
      // process exits without closing (a close would flush metadata mid-write).
      if (!interruptedExit) {
        await source.close().catch(() => {});
        await target.close().catch(() => {});
      }
    }
  },
};
