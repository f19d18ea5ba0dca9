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
import { existsSync, lstatSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { type ParsedArgs, parseArgs, UsageError } from './args.js';
import type { Command } from './commands.js';
import { checkFormat, openImageChain, store } from './node-images.js';
import { type ReadSidecar, type SidecarImages, readSidecar, SIDECAR_SUFFIX, SidecarCheckpointer, sidecarPath } from './sidecar.js';
import { ProgressLine } from './progress.js';
import { EXIT, exitCodeFor, runPlain } from './mirror-io.js';
import { runQmpSocket, runQmpStdio } from './qmp-monitor.js';
import { version } from './version.js';
import { FaultRules } from '../block/fault.js';
import { ImageConflictError } from '../block/block-device.js';
import { FaultImage } from '../format/fault-image.js';
import { type NewImage, type OpenedImage, WritableOnDemand, createInStore, refuseOverlap } from '../format/image-access.js';
import { type ImageStamp, describeChange, stampImage } from '../format/image-stamp.js';
import type { ImageFormat } from '../format/image-format.js';
import { repairLeaks } from '../format/repair.js';
import { MirrorControl } from '../mirror/control.js';
import { ERROR_POLICIES, type ErrorPolicy } from '../mirror/error-policy.js';
import { parseFaultSpec } from '../mirror/fault-spec.js';
import { MirrorJob } from '../mirror/mirror-job.js';
import { COPY_MODES, type CopyMode, type MirrorOptions, type ResolvedOptions, SYNC_MODES, type SyncMode, resolveOptions } from '../mirror/options.js';
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
  checkpointer: SidecarCheckpointer;
  /** The stamps of both images, once closed (opened again read-only to read them). */
  stamps(): Promise<SidecarImages>;
  /** The target was made by this run: removed again if the job ends before writing anything. */
  created: { remove(): Promise<void> } | null;
}

/** The options a job keeps for its whole life; a resume must not change them. */
const FIXED: { option: string; field: keyof ResolvedOptions }[] = [
  { option: 'sync', field: 'sync' },
  { option: 'granularity', field: 'granularity' },
  { option: 'buf-size', field: 'bufSize' },
  { option: 'on-source-error', field: 'onSourceError' },
  { option: 'on-target-error', field: 'onTargetError' },
  { option: 'copy-mode', field: 'copyMode' },
  { option: 'id', field: 'id' },
];

/** The command line as MirrorOptions; every value is checked here, before any file is touched. */
function mirrorOptions(o: ParsedArgs['options']): MirrorOptions {
  const size = (name: string) => (o[name] === undefined ? undefined : parseSize(o[name] as string, `--${name}`));
  const policy = (name: string) => oneOf<ErrorPolicy>(name, o[name], ERROR_POLICIES);
  const options: MirrorOptions = { sync: oneOf('sync', o.sync ?? 'full', SYNC_MODES) as SyncMode };
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
  try {
    resolveOptions(options, { targetIsZero: false });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return options;
}

/**
 * A resumed job keeps the options it started with: the same command line,
 * with --resume added, is accepted; an option that differs is named.
 */
function checkResumeOptions(o: ParsedArgs['options'], given: MirrorOptions, checkpoint: ReadSidecar, context: { targetClusterSize?: number; sourceHasBacking: boolean }): void {
  const requested = given.sync === 'top' && !context.sourceHasBacking ? { ...given, sync: 'full' as const } : given;
  const resolved = resolveOptions(requested, { ...(context.targetClusterSize ? { targetClusterSize: context.targetClusterSize } : {}), targetIsZero: false });
  const differ: string[] = [];
  for (const { option, field } of FIXED) {
    if (o[option] === undefined) continue;
    if (resolved[field] !== checkpoint.options[field]) differ.push(`--${option} ${String(o[option])} (the job started with ${String(checkpoint.options[field])})`);
  }
  if (o.format !== undefined && o.format !== checkpoint.sourceFormat) differ.push(`-f ${String(o.format)} (the source is ${checkpoint.sourceFormat})`);
  if (o['target-format'] !== undefined && o['target-format'] !== checkpoint.targetFormat) differ.push(`-O ${String(o['target-format'])} (the target is ${checkpoint.targetFormat})`);
  if (differ.length > 0) {
    throw new UsageError(`--resume continues the job with the options it started with; these differ: ${differ.join(', ')}. Drop them, or delete ${checkpoint.target}${SIDECAR_SUFFIX} to start over`);
  }
}

async function stampChain(opened: OpenedImage, digest: boolean): Promise<ImageStamp[]> {
  const [top, ...backing] = opened.chain;
  // The top may have changed (a guest wrote it); backing files are held shared and stamped as opened.
  const identity = (await store.identify(top!.name)) ?? top!.identity;
  const out = [await stampImage(opened.image, top!.name, identity, { digest })];
  for (const file of backing) out.push({ name: file.name, key: file.identity.key, size: file.identity.size, modifiedMs: file.identity.modifiedMs });
  return out;
}

/** Refuses a resume onto images that changed since the checkpoint, naming what changed. */
async function checkResumeImages(checkpoint: ReadSidecar, source: OpenedImage, target: OpenedImage): Promise<void> {
  const how = `delete ${checkpoint.target}${SIDECAR_SUFFIX} and run the mirror again without --resume (everything is copied again)`;
  const sourceNow = await stampChain(source, true);
  const chainBefore = checkpoint.images.source;
  for (let i = 0; i < Math.max(chainBefore.length, sourceNow.length); i++) {
    const before = chainBefore[i];
    if (!before) throw new ImageConflictError(checkpoint.source, `cannot resume: the source's backing chain changed (${sourceNow[i]!.name} is new in it); ${how}`);
    const change = describeChange(before, sourceNow[i] ?? null, { exact: true });
    if (change) throw new ImageConflictError(checkpoint.source, `cannot resume: the ${i === 0 ? 'source' : 'backing file'} ${change}; ${how}`);
  }
  const targetNow = (await stampChain(target, checkpoint.final))[0]!;
  // After a kill the job itself wrote the target after its last checkpoint, until the heartbeat stopped.
  const change = describeChange(checkpoint.images.target, targetNow, { exact: checkpoint.final, writesEndedMs: checkpoint.touchedMs, slackMs: 2000 });
  if (change) throw new ImageConflictError(checkpoint.target, `cannot resume: the target ${change}; ${how}`);
}

async function open(argv: string[]): Promise<Opened & { qmp: QmpWhere | null; progress: boolean }> {
  const { options: o, positionals } = parseArgs(argv, SPECS);
  if (positionals.length !== 2) throw new UsageError('expected SRC and DST');
  const [srcPath, dstPath] = positionals as [string, string];
  const qmp = qmpWhere(o.qmp);
  if (qmp?.kind === 'unix' && lstatSync(qmp.path, { throwIfNoEntry: false })?.isSocket() === false) {
    throw new UsageError(`--qmp unix:${qmp.path}: ${qmp.path} exists and is not a socket; refusing to replace it`);
  }
  const given = mirrorOptions(o);
  const srcFormat = checkFormat(o.format as string | undefined);
  const dstFormat = checkFormat(o['target-format'] as string | undefined);
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

  // The source first, read-only and shared (a guest's first write reopens it for writing).
  const openSource = (readOnly: boolean) => openImageChain(srcPath, { readOnly, ...(srcFormat ? { format: srcFormat } : {}) });
  const sourceOpened = await openSource(true);
  const source: ImageFormat = qmp !== null ? new WritableOnDemand(sourceOpened, openSource) : sourceOpened.image;
  const currentSource = () => (source instanceof WritableOnDemand ? source.current : sourceOpened);
  let target: OpenedImage | undefined;
  let created: NewImage | undefined;
  let published = false;
  try {
    const existing = await store.identify(dstPath);
    refuseOverlap(sourceOpened, srcPath, dstPath, existing);
    let checkpoint: ReadSidecar | null = null;
    let options: MirrorOptions = given;
    if (existing) {
      // The target is held exclusively before its checkpoint is read: a running job's is not ours to take.
      target = await openImageChain(dstPath, dstFormat ? { format: dstFormat } : {});
      if (!o.resume && lstatSync(sidecar, { throwIfNoEntry: false })) {
        throw new UsageError(`${dstPath} has an interrupted mirror's checkpoint (${sidecar}): continue it with --resume, or delete that file to start over`);
      }
      checkpoint = o.resume ? readSidecar(sidecar) : null;
      if (checkpoint) {
        if (checkpoint.source !== resolve(srcPath) || checkpoint.target !== resolve(dstPath)) {
          throw new UsageError(`the checkpoint ${sidecar} is for ${checkpoint.source} -> ${checkpoint.target}, not these images`);
        }
        const sourceInfo = await source.info();
        const targetInfo = await target.image.info();
        checkResumeOptions(o, given, checkpoint, { ...(targetInfo.clusterSize ? { targetClusterSize: targetInfo.clusterSize } : {}), sourceHasBacking: sourceInfo.backingFile !== undefined });
        await checkResumeImages(checkpoint, sourceOpened, target);
        const c = checkpoint.options;
        options = {
          id: c.id,
          sync: c.sync,
          granularity: c.granularity,
          'buf-size': c.bufSize,
          speed: given.speed ?? c.speed,
          'on-source-error': c.onSourceError,
          'on-target-error': c.onTargetError,
          'copy-mode': c.copyMode,
          unmap: c.unmap,
          // What the target holds is not known: zeroes are written where the target does not read as zero already.
          'target-is-zero': false,
        };
      } else if (o.resume) {
        process.stderr.write(`diskmirror mirror: no checkpoint at ${sidecar}: mirroring everything\n`);
      }
      // An interrupted job may have left leaked clusters in a qcow2 target: give them back first.
      await repairLeaks(target.image);
    } else {
      if (lstatSync(sidecar, { throwIfNoEntry: false })) {
        throw new UsageError(`${sidecar} is the checkpoint of a mirror into ${dstPath}, which no longer exists: delete it to start over`);
      }
      // sync=top copies only the top image: the new target sits on the source's backing file, as drive-mirror makes it.
      const format = dstFormat ?? source.format;
      const sourceInfo = await source.info();
      const onBacking = given.sync === 'top' && sourceInfo.backingFile !== undefined;
      if (onBacking && format !== 'qcow2') {
        throw new UsageError(`--sync top needs a target that can have a backing file: use -O qcow2 (the source's backing file is ${sourceInfo.backingFile})`);
      }
      const backing = onBacking
        ? { backingFile: resolve(dirname(resolve(srcPath)), sourceInfo.backingFile!), ...(sourceInfo.backingFormat ? { backingFormat: sourceInfo.backingFormat } : {}) }
        : {};
      // Made aside and given its name once formatted; never over a file that appeared meanwhile.
      created = await createInStore(store, dstPath, { format, size: source.size, ...backing }, { replace: false });
      await created.publish();
      published = true;
      target = { image: created.image, name: created.name, chain: [{ name: created.name, identity: created.identity }] };
    }
    const targetOpened = target;
    const faults = { source: new FaultRules(), target: new FaultRules() };
    for (const { side, rule } of injected) faults[side].add(rule);
    const stamps = async (digestTarget: boolean): Promise<SidecarImages> => ({
      source: await stampChain(currentSource(), true),
      target: (await stampChain(targetOpened, digestTarget))[0]!,
    });
    const checkpointer = new SidecarCheckpointer(
      sidecar,
      { source: resolve(srcPath), target: resolve(dstPath), sourceFormat: source.format, targetFormat: targetOpened.image.format },
      () => stamps(false),
    );
    const job = await MirrorJob.create({
      source: new FaultImage(source, faults.source),
      target: new FaultImage(targetOpened.image, faults.target),
      options,
      targetCreated: created !== undefined,
      ...(checkpoint ? { resume: { bitmap: checkpoint.bitmapBytes } } : {}),
      checkpointer,
      checkpointIntervalSeconds: intervalSeconds,
    });
    const control = new MirrorControl();
    control.add(job, faults);
    const made = created;
    // Once the images are closed: open them again read-only (nothing writes on such an open) and stamp them.
    const stampsAfterClose = async (): Promise<SidecarImages> => {
      const s = await openSource(true);
      try {
        const t = await openImageChain(dstPath, { readOnly: true, format: targetOpened.image.format });
        try {
          return { source: await stampChain(s, true), target: (await stampChain(t, true))[0]! };
        } finally {
          await t.image.close();
        }
      } finally {
        await s.image.close();
      }
    };
    return {
      source,
      target: targetOpened.image,
      job,
      control,
      sidecar,
      checkpointer,
      stamps: stampsAfterClose,
      created: made ? { remove: () => store.remove(made.name) } : null,
      qmp,
      progress: o.progress === true,
    };
  } catch (err) {
    await source.close().catch(() => {});
    // A target this run made, before any data moved, goes again: unlinked while still held, so
    // nobody else opens it meanwhile. Never by name before it was published: the name may be somebody else's.
    if (created && published) await store.remove(created.name).catch(() => {});
    if (created && !published) await created.discard();
    await target?.image.close().catch(() => {});
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
    '                                and events; over stdio, or on a Unix socket (one client at a time).',
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
    // Images are closed at the end, unless I/O is still under way (a close would flush metadata mid-write).
    let closeImages = true;
    const closeBoth = async () => {
      closeImages = false;
      await source.close().catch(() => {});
      await target.close().catch(() => {});
    };
    const seal = async () => {
      try {
        return opened.checkpointer.seal(await opened.stamps());
      } catch {
        return false;
      }
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
        session = opened.qmp.kind === 'stdio' ? runQmpStdio(run) : runQmpSocket(run, opened.qmp.path);
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
        if (quiet) {
          await closeBoth();
          if (saved) await seal();
        } else {
          closeImages = false;
          opened.checkpointer.stop();
        }
        process.stderr.write(
          saved
            ? `diskmirror mirror: interrupted; the checkpoint is in ${opened.sidecar} (continue with --resume)\n`
            : existsSync(opened.sidecar)
              ? `diskmirror mirror: interrupted; the last checkpoint could not be updated, ${opened.sidecar} holds an earlier one (continue with --resume)\n`
              : `diskmirror mirror: interrupted before a checkpoint could be stored; run the mirror again\n`,
        );
        return EXIT.interrupted;
      }
      const nothingWritten = outcome !== EXIT.completed && opened.created !== null && job.stats().bytesWritten === 0;
      if (nothingWritten) {
        // Nothing was copied into the target this run made: it goes, with its checkpoint (unlinked while still held).
        await opened.created!.remove().catch(() => {});
        await opened.checkpointer.remove().catch(() => {});
      }
      await closeBoth();
      // A failed job keeps its checkpoint (fix the cause, then --resume): seal it now that nothing writes.
      if (outcome !== EXIT.completed && !nothingWritten && existsSync(opened.sidecar)) await seal();
      return outcome;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.stdout.off('error', onOutputError);
      opened.checkpointer.stop();
      lines?.close();
      process.stdin.destroy();
      if (closeImages) await closeBoth();
    }
  },
};
