/**
 * `mirror --resume`: the checkpoint next to the target read and checked
 * before anything is written. The same command line with --resume added is
 * accepted; an option that differs is named; images that changed since the
 * checkpoint are refused, naming what changed.
 */
import { lstatSync } from 'node:fs';
import { resolve } from 'node:path';
import { type ParsedArgs, UsageError } from './args.js';
import { type ReadSidecar, readSidecar, SIDECAR_SUFFIX } from './sidecar.js';
import { store } from './node-images.js';
import type { OpenedImage } from '../format/image-access.js';
import { refuseChangedImages, stampChain } from '../format/image-stamp.js';
import type { ResumePlan } from '../mirror/launch.js';
import { type MirrorOptions, type ResolvedOptions, givenOptions, resolveOptions } from '../mirror/options.js';

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

export interface ResumeRequest {
  o: ParsedArgs['options'];
  given: MirrorOptions;
  srcPath: string;
  dstPath: string;
  sidecar: string;
  source: OpenedImage;
}

/**
 * With the target held: refuses a checkpoint left without --resume, and
 * with --resume returns the plan to continue (null when there is no
 * checkpoint: everything is mirrored).
 */
export async function planResume(r: ResumeRequest, target: OpenedImage): Promise<ResumePlan | null> {
  const { o, sidecar } = r;
  if (!o.resume) {
    if (lstatSync(sidecar, { throwIfNoEntry: false })) {
      throw new UsageError(`${r.dstPath} has an interrupted mirror's checkpoint (${sidecar}): continue it with --resume, or delete that file to start over`);
    }
    return null;
  }
  const checkpoint = readSidecar(sidecar);
  if (!checkpoint) {
    process.stderr.write(`diskmirror mirror: no checkpoint at ${sidecar}: mirroring everything\n`);
    return null;
  }
  if (checkpoint.source !== resolve(r.srcPath) || checkpoint.target !== resolve(r.dstPath)) {
    throw new UsageError(`the checkpoint ${sidecar} is for ${checkpoint.source} -> ${checkpoint.target}, not these images`);
  }
  const sourceInfo = await r.source.image.info();
  const targetInfo = await target.image.info();
  checkResumeOptions(o, r.given, checkpoint, { ...(targetInfo.clusterSize ? { targetClusterSize: targetInfo.clusterSize } : {}), sourceHasBacking: sourceInfo.backingFile !== undefined });
  refuseChangedImages(
    // After a kill the job itself wrote the target after its last checkpoint, until the heartbeat stopped.
    { ...checkpoint.images, final: checkpoint.final, writesEndedMs: checkpoint.writesEndedMs, sourceWriting: checkpoint.sourceWriting === true },
    { source: await stampChain(store, r.source, true), target: (await stampChain(store, target, checkpoint.final))[0]! },
    { source: checkpoint.source, target: checkpoint.target },
    `delete ${checkpoint.target}${SIDECAR_SUFFIX} and run the mirror again without --resume (everything is copied again)`,
  );
  return { options: givenOptions(checkpoint.options, r.given.speed !== undefined ? { speed: r.given.speed } : {}), resume: { bitmap: checkpoint.bitmapBytes } };
}

/** Without a target, a checkpoint next to its name is stale. */
export function refuseStaleCheckpoint(sidecar: string, dstPath: string): void {
  if (lstatSync(sidecar, { throwIfNoEntry: false })) {
    throw new UsageError(`${sidecar} is the checkpoint of a mirror into ${dstPath}, which no longer exists: delete it to start over`);
  }
}
