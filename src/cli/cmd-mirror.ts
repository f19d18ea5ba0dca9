/**
 * diskmirror mirror: a mirror job between two image files, launched as the
 * worker launches its jobs (src/mirror/launch.ts).
 *
 * Without --qmp it runs until READY, completes and exits 0; a stop (by
 * policy) pauses and asks, on a terminal, whether to resume or cancel, or
 * waits for "resume" or "cancel" on stdin (mirror-io.ts). With --qmp it is a
 * QMP monitor (qmp-monitor.ts). Either way the job checkpoints to a sidecar
 * next to the target; --resume continues from it (mirror-resume.ts); SIGINT
 * and SIGTERM checkpoint and exit 130.
 */
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { type ParsedArgs, parseArgs, UsageError } from './args.js';
import type { Command } from './command.js';
import { checkFormat, defaultFormat, openImageChain, store } from './node-images.js';
import { isNbdUri } from '../block/nbd/uri.js';
import { SidecarCheckpointer, sidecarPath } from './sidecar.js';
import { planResume, refuseStaleCheckpoint } from './mirror-resume.js';
import { ProgressLine } from './progress.js';
import { EXIT, exitCodeFor, runPlain } from './mirror-io.js';
import { listenQmp, type QmpListener, runQmpSocket, runQmpStdio } from './qmp-monitor.js';
import { version } from './version.js';
import { type OpenedImage, WritableOnDemand } from '../format/image-access.js';
import { stampChain } from '../format/image-stamp.js';
import type { ImageFormat } from '../format/image-format.js';
import { MirrorControl } from '../mirror/control.js';
import { type Ending, type JobStop, endMirror } from '../mirror/end.js';
import { parseFaultSpec } from '../qapi/faults.js';
import { launchMirror } from '../mirror/launch.js';
import type { MirrorJob } from '../mirror/mirror-job.js';
import { type MirrorOptions, resolveOptions } from '../mirror/options.js';
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
  { name: 'qmp', optionalValue: ['unix:', 'stdio'] },
  { name: 'resume' },
  { name: 'progress', short: 'p' },
];

/** Where the QMP monitor listens: stdio, or a Unix socket (QEMU's `-qmp unix:PATH,server=on`). */
type QmpWhere = { kind: 'stdio' } | { kind: 'unix'; path: string };

function qmpWhere(value: unknown): QmpWhere | null {
  if (value === undefined) return null;
  if (value === true || value === 'stdio') return { kind: 'stdio' };
  const text = String(value);
  if (text.startsWith('unix:')) {
    const path = text.slice(5).split(',')[0]!;
    if (!path) throw new UsageError('--qmp unix:PATH needs a path');
    return { kind: 'unix', path };
  }
  throw new UsageError(`--qmp takes stdio or unix:PATH, not '${text}'`);
}

interface Opened {
  source: ImageFormat;
  target: ImageFormat;
  job: MirrorJob;
  control: MirrorControl;
  sidecar: string;
  /** Null when an image is an NBD export: nothing could tell whether it changed before a resume. */
  checkpointer: SidecarCheckpointer | null;
  /** How the job's life ends (mirror/end.ts). */
  ending: Ending;
}

/** The command line as MirrorOptions; every value is checked here (as the job checks it), before any file is touched. */
function mirrorOptions(o: ParsedArgs['options']): MirrorOptions {
  const size = (name: string) => (o[name] === undefined ? undefined : parseSize(o[name] as string, `--${name}`));
  const options = { sync: o.sync ?? 'full' } as MirrorOptions;
  const set = (key: keyof MirrorOptions, value: unknown) => {
    if (value !== undefined) (options as unknown as Record<string, unknown>)[key] = value;
  };
  set('granularity', size('granularity'));
  set('buf-size', size('buf-size'));
  set('speed', size('speed'));
  set('on-source-error', o['on-source-error']);
  set('on-target-error', o['on-target-error']);
  set('copy-mode', o['copy-mode']);
  set('id', o.id);
  try {
    resolveOptions(options, { targetIsZero: false });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return options;
}

async function open(argv: string[]): Promise<Opened & { qmp: QmpWhere | null; listener: QmpListener | null; progress: boolean }> {
  const { options: o, positionals } = parseArgs(argv, SPECS);
  if (positionals.length !== 2) throw new UsageError('expected SRC and DST');
  const [srcPath, dstPath] = positionals as [string, string];
  const qmp = qmpWhere(o.qmp);
  const given = mirrorOptions(o);
  const srcFormat = checkFormat(o.format as string | undefined);
  const dstFormat = defaultFormat(dstPath, checkFormat(o['target-format'] as string | undefined));
  // An export has no modification time and no lock: a checkpoint could not tell whether it changed before a resume.
  const checkpoints = !isNbdUri(srcPath) && !isNbdUri(dstPath);
  if (!checkpoints && o.resume) {
    throw new UsageError('--resume needs a checkpoint, and none is kept when an image is an NBD export (nothing could tell whether the export changed meanwhile); mirror again without --resume');
  }
  const intervalSeconds = o['checkpoint-interval'] === undefined ? 5 : Number(o['checkpoint-interval']);
  if (!(intervalSeconds > 0)) throw new UsageError(`--checkpoint-interval must be a positive number of seconds`);
  const injected = ((o.inject as string[] | undefined) ?? []).map((spec) => {
    try {
      return parseFaultSpec(spec);
    } catch (err) {
      throw new UsageError(`--inject: ${(err as Error).message}`);
    }
  });
  const sidecar = sidecarPath(dstPath);

  // The socket is taken before any image is touched: a path it cannot be bound to leaves nothing behind.
  const listener = qmp?.kind === 'unix' ? await listenQmp(qmp.path) : null;

  // The source first, read-only and shared (a guest's first write reopens it for writing).
  const openSource = (readOnly: boolean) => openImageChain(srcPath, { readOnly, ...(srcFormat ? { format: srcFormat } : {}) });
  const sourceOpened = await openSource(true).catch((err: unknown) => {
    listener?.close();
    throw err;
  });
  const source: ImageFormat = qmp !== null ? new WritableOnDemand(sourceOpened, openSource) : sourceOpened.image;
  const currentSource = () => (source instanceof WritableOnDemand ? source.current : sourceOpened);
  try {
    // Periodic checkpoints stamp the target without its digest: the job goes on writing it.
    const stamps = async (target: OpenedImage) => ({
      source: await stampChain(store, currentSource(), true),
      target: (await stampChain(store, target, false))[0]!,
    });
    const launchSource = { image: source, name: srcPath, opened: sourceOpened };
    const launched = await launchMirror({
      store,
      source: launchSource,
      target: dstPath,
      ...(dstFormat ? { targetFormat: dstFormat } : {}),
      options: given,
      // A backing file is named as the source's directory reaches it.
      backingName: (backing) => resolve(dirname(resolve(srcPath)), backing),
      ...(checkpoints
        ? {
            onExisting: (target: OpenedImage) => planResume({ o, given, srcPath, dstPath, sidecar, source: sourceOpened }, target),
            onMissing: async () => refuseStaleCheckpoint(sidecar, dstPath),
            checkpointer: (target: OpenedImage) =>
              new SidecarCheckpointer(
                sidecar,
                { source: resolve(srcPath), target: resolve(dstPath), sourceFormat: source.format, targetFormat: target.image.format },
                () => stamps(target),
              ),
          }
        : {}),
      checkpointIntervalSeconds: intervalSeconds,
      faults: injected,
    });
    const { job, target } = launched;
    const control = new MirrorControl();
    control.add(job, launched.faults);
    return {
      source,
      target: target.image,
      job,
      control,
      sidecar,
      checkpointer: launched.checkpointer,
      ending: { store, source: launchSource, launched },
      qmp,
      listener,
      progress: o.progress === true,
    };
  } catch (err) {
    listener?.close();
    await source.close().catch(() => {});
    throw err;
  }
}

export const mirrorCommand: Command = {
  usage:
    'mirror [-f FMT] [-O FMT] [--sync full|top|none] [--granularity N] [--buf-size N] [--speed N] [--on-source-error P] [--on-target-error P] [--copy-mode M] [--inject RULE]... [--qmp [unix:PATH]] [--resume] [-p] SRC DST',
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
    "  --qmp [unix:PATH]             a QMP monitor, as QEMU's: a greeting, qmp_capabilities first, then commands",
    '                                and events; over stdio, or on a Unix socket (one client at a time, the next waits).',
    '                                The job starts once negotiated and never completes by itself; quit ends it',
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
    // Plain mode reads answers line by line; the QMP monitor reads stdin itself.
    const lines = opened.qmp === null ? createInterface({ input: process.stdin, terminal: false }) : null;
    const progress = opened.progress && process.stderr.isTTY ? new ProgressLine(process.stderr) : null;
    // The bar stays quiet while a paused job waits for an answer.
    if (progress) job.onProgress((p) => p.paused || progress.update(p.offset, p.len));

    let interrupted: (() => void) | null = null;
    const onSignal = () => interrupted?.();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    // Nobody reads the events any more (`| head`): stop as for a signal, rather than die mid-write.
    const onOutputError = (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') onSignal();
    };
    process.stdout.on('error', onOutputError);
    const signalled = new Promise<'interrupted'>((r) => (interrupted = () => r('interrupted')));
    // Images are closed at the end (mirror/end.ts), unless I/O is still under way (a close would flush metadata mid-write).
    let closeImages = true;
    const end = (stop: JobStop) => {
      closeImages = false;
      return endMirror(opened.ending, stop);
    };
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      job.start();
    };
    try {
      let session: Promise<number | 'interrupted' | 'never-started'>;
      if (opened.qmp === null) {
        start();
        session = runPlain(opened, lines!, progress);
      } else {
        const run = { job, control: opened.control, version: version(), start };
        session = opened.listener ? runQmpSocket(run, opened.listener) : runQmpStdio(run);
      }
      let outcome = await Promise.race([session, signalled]);
      if (outcome === 'never-started' || !started) {
        // The client left before it negotiated: no job ran, nothing was copied.
        if (!started) job.cancel(true);
        await job.result;
        outcome = EXIT.failed;
        process.stderr.write('diskmirror mirror: the QMP session ended before the job started; nothing was copied\n');
      }
      if (outcome === 'interrupted' && ['waiting', 'pending', 'aborting', 'concluded', 'null'].includes(job.status)) {
        // Past the point of no return (completing, or winding down): it finishes, and leaves no stale checkpoint.
        outcome = exitCodeFor(await job.result);
      }
      if (outcome === 'interrupted') {
        progress?.clear();
        // Stop writing, let what is in flight land, then checkpoint: the images are then exactly as the checkpoint says.
        const { quiet, saved } = await job.halt();
        if (quiet) await end(saved ? 'halted' : 'halted-unsaved');
        else {
          closeImages = false;
          opened.checkpointer?.stop();
        }
        process.stderr.write(
          !opened.checkpointer
            ? 'diskmirror mirror: interrupted; no checkpoint is kept with an NBD export: run the mirror again to copy everything\n'
            : saved
            ? `diskmirror mirror: interrupted; the checkpoint is in ${opened.sidecar} (continue with --resume)\n`
            : existsSync(opened.sidecar)
              ? `diskmirror mirror: interrupted; the last checkpoint could not be updated, ${opened.sidecar} holds an earlier one (continue with --resume)\n`
              : `diskmirror mirror: interrupted before a checkpoint could be stored; run the mirror again\n`,
        );
        return EXIT.interrupted;
      }
      await end((await job.result).outcome);
      return outcome;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.stdout.off('error', onOutputError);
      opened.checkpointer?.stop();
      opened.listener?.close();
      lines?.close();
      process.stdin.destroy();
      if (closeImages) {
        await source.close().catch(() => {});
        await target.close().catch(() => {});
      }
    }
  },
};
