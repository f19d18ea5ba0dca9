/**
 * How a mirror job starts, the same for the command line and the worker:
 * the target is refused if it is the source or in its backing chain, an
 * existing one is opened exclusive (checked for a resume, its size
 * compared, its leaks given back), a new one is made aside (on the
 * source's backing file for sync=top) and published; then the job is built
 * over fault injectors with the front end's checkpointer. The front end
 * opens the source (a file, a picked File, a URL), says how names resolve,
 * and keeps what only it knows: where checkpoints live and how to resume.
 * How the job ends, for both, is end.ts.
 */
import type { FileStore } from '../block/file-store.js';
import { FaultRules } from '../block/fault.js';
import { FaultImage } from '../format/fault-image.js';
import { type NewImage, type OpenedImage, createInStore, openChain, refuseOverlap } from '../format/image-access.js';
import { vpcCreatedSize } from '../format/vpc/create.js';
import { type FormatName, type ImageFormat, FormatError } from '../format/image-format.js';
import { repairLeaks } from '../format/repair.js';
import type { JobFaults } from './control.js';
import type { FaultSpec } from '../qapi/faults.js';
import { MirrorJob } from './mirror-job.js';
import { type MirrorOptions, OptionError } from './options.js';
import type { Checkpointer, ResumeState } from './types.js';

export interface LaunchSource {
  /** What the job reads (and writes, for a guest). */
  image: ImageFormat;
  /** Its name, for messages. */
  name: string;
  /** For a source in the store: its chain as opened (the target may be none of it). */
  opened: OpenedImage | null;
}

/** What a resume brings: the options the job started with and its bitmap. */
export interface ResumePlan {
  options: MirrorOptions;
  resume: ResumeState;
}

export interface LaunchSpec<C extends Checkpointer = Checkpointer> {
  store: FileStore;
  source: LaunchSource;
  target: string;
  /** The format of a new target (default: the source's); an existing one is opened as this format if given. */
  targetFormat?: FormatName;
  options: MirrorOptions;
  /** How a new target names the source's backing file, for sync=top. */
  backingName(backingFile: string, sourceName: string): string;
  /**
   * The target exists and is held: a resume checks it here (and refuses,
   * by throwing) before anything is written, and returns its plan; null
   * for a fresh start.
   */
  onExisting?(target: OpenedImage): Promise<ResumePlan | null>;
  /** The target does not exist: a front end refuses here what it must (a resume, a stale checkpoint). */
  onMissing?(): Promise<void>;
  /** Publishes a new image under its name (default: its own publish). */
  publish?(made: NewImage): Promise<void>;
  /** The checkpointer, once the target is open. */
  checkpointer?(target: OpenedImage): C;
  checkpointIntervalSeconds?: number;
  /** Faults armed before the job starts (the command line's --inject). */
  faults?: FaultSpec[];
}

export interface Launched<C extends Checkpointer = Checkpointer> {
  job: MirrorJob;
  target: OpenedImage;
  faults: JobFaults;
  /** The job's checkpointer, if the front end gave one. */
  checkpointer: C | null;
  /** The target was made by this launch. */
  created: boolean;
  /** Removes the target this launch made if the job wrote nothing into it (while it is still held); true if it did. */
  dropIfUnwritten(): Promise<boolean>;
}

/**
 * Opens or creates the target and builds the job (not started). On an
 * error nothing is left: the target is closed, and removed if it was made
 * here. The source stays open: it is the front end's.
 */
export async function launchMirror<C extends Checkpointer = Checkpointer>(spec: LaunchSpec<C>): Promise<Launched<C>> {
  const { store, source } = spec;
  let target: OpenedImage | undefined;
  let made: NewImage | undefined;
  let published = false;
  try {
    const existing = await store.identify(spec.target);
    if (source.opened) refuseOverlap(source.opened, source.name, spec.target, existing);
    let plan: ResumePlan | null = null;
    if (existing) {
      // Held exclusively before anything else looks at it: a running job's target is not ours to take.
      target = await openChain(store, spec.target, { readOnly: false, ...(spec.targetFormat ? { format: spec.targetFormat } : {}) });
      plan = (await spec.onExisting?.(target)) ?? null;
      if (target.image.size !== source.image.size) {
        throw new OptionError(`Source and target image have different sizes (${source.image.size} and ${target.image.size} bytes)`);
      }
      // An interrupted job may have left leaked clusters in a qcow2 target: give them back first.
      await repairLeaks(target.image);
    } else {
      await spec.onMissing?.();
      const format = spec.targetFormat ?? source.image.format;
      // sync=top copies only the top image: a new target sits on the source's backing file, as drive-mirror makes it.
      const info = await source.image.info();
      const onBacking = spec.options.sync === 'top' && info.backingFile !== undefined;
      if (onBacking && format !== 'qcow2') {
        throw new FormatError(`sync top needs a target that can have a backing file: make it qcow2 (the source's backing file is ${info.backingFile})`, 'format');
      }
      const backing = onBacking ? { backingFile: spec.backingName(info.backingFile!, source.name), ...(info.backingFormat ? { backingFormat: info.backingFormat } : {}) } : {};
      // Made aside and given its name once formatted; never over a file that appeared meanwhile.
      // A mirror's target has the source's size: a vpc target keeps it exactly (force_size) where a CHS geometry would round it up.
      const exact = format === 'vpc' && vpcCreatedSize(source.image.size) !== source.image.size ? { forceSize: true } : {};
      made = await createInStore(store, spec.target, { format, size: source.image.size, ...backing, ...exact }, { replace: false });
      await (spec.publish ? spec.publish(made) : made.publish());
      published = true;
      target = { image: made.image, name: made.name, chain: [{ name: made.name, identity: (await store.identify(made.name)) ?? made.identity }] };
    }
    const faults: JobFaults = { source: new FaultRules(), target: new FaultRules() };
    for (const { side, rule } of spec.faults ?? []) faults[side].add(rule);
    const checkpointer = spec.checkpointer?.(target);
    const job = await MirrorJob.create({
      source: new FaultImage(source.image, faults.source),
      target: new FaultImage(target.image, faults.target),
      options: plan?.options ?? spec.options,
      targetCreated: made !== undefined,
      ...(plan ? { resume: plan.resume } : {}),
      ...(checkpointer ? { checkpointer } : {}),
      ...(spec.checkpointIntervalSeconds !== undefined ? { checkpointIntervalSeconds: spec.checkpointIntervalSeconds } : {}),
    });
    const name = target.name;
    const createdHere = made !== undefined;
    return {
      job,
      target,
      faults,
      checkpointer: checkpointer ?? null,
      created: createdHere,
      async dropIfUnwritten() {
        if (!createdHere || job.stats().bytesWritten > 0) return false;
        await store.remove(name).catch(() => {});
        return true;
      },
    };
  } catch (err) {
    // A target this launch made, before any data moved, goes again: removed while still held, and by
    // name only once it was published (before that, the name may be somebody else's).
    if (made && published) await store.remove(made.name).catch(() => {});
    if (made && !published) await made.discard();
    await target?.image.close().catch(() => {});
    throw err;
  }
}
