/**
 * The jobs of this worker: how one starts (mirror, import, resume), what it
 * holds while it runs, how it lets go, and what the page hears of it
 * (events, progress that carries the bitmap's picture, the moment it let
 * go of its images).
 *
 * Every job opens and creates its images through image-access.ts over an
 * OpfsFileStore (Web Locks; see ARCHITECTURE.md, "Who may touch an image"),
 * and holds them, and a lock on its own id, for its whole life. A source or
 * a target may also be an NBD export (nbd.ts): it is opened, never made,
 * and a job with one is never resumed (nothing can check an export for
 * changes): one writing an export keeps no checkpoint, one reading an
 * export keeps one only to mark its target incomplete if it is cut off.
 */
import { ImageConflictError } from '../block/block-device.js';
import { isNbdUri } from '../block/nbd/uri.js';
import { type HeldLock, heldLocks, tryWebLock } from '../block/opfs-lock.js';
import { type OpfsFileStore, checkOpfsName } from '../block/opfs-store.js';
import type { NbdAwareStore } from '../block/nbd/store.js';
import type { OpenedImage } from '../format/image-access.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES, formatNamesText } from '../format/image-format.js';
import { refuseChangedImages, stampChain } from '../format/image-stamp.js';
import { type JobFaults, MirrorControl, faultFacts } from '../mirror/control.js';
import type { AnyQmpEvent } from '../qapi/events.js';
import { type Ending, endMirror } from '../mirror/end.js';
import { type Launched, type LaunchSpec, launchMirror } from '../mirror/launch.js';
import type { MirrorJob } from '../mirror/mirror-job.js';
import type { FaultSpec } from '../qapi/faults.js';
import { type MirrorOptions, resolveOptions } from '../mirror/options.js';
import type { JobOutcome } from '../mirror/types.js';
import { type SourceRef, describeSource } from '../shared/source-ref.js';
import { WorkerError } from '../shared/worker-error.js';
import type { EventSink, JobKind, JobProgress, JobRelease, ProgressSink, ReleasedSink } from './api-types.js';
import { type StoredCheckpoint, IdbCheckpointer, listCheckpoints, writesEnded } from './checkpoint-store.js';
import { CHECKPOINT_INTERVAL_SECONDS } from './intervals.js';
import type { SimulatedGuest } from './guest.js';
import { type ImageFacts, type ImageStore, publishOrDrop } from './image-store.js';
import { type JobSource, contentFacts, openJobSource } from './job-source.js';
import { checkExportUri, exportKey, nbdOpenError, withExports } from './nbd.js';

/** What a job starts from. */
export interface Launch {
  kind: JobKind;
  source: SourceRef;
  target: string;
  /** The format of a target the job creates (default: the source's); an existing target is opened as this format if given. */
  targetFormat?: FormatName;
  options: MirrorOptions;
  resume?: StoredCheckpoint;
  /** Faults armed before the start (as --inject). */
  faults?: FaultSpec[];
}

export interface JobEntry {
  job: MirrorJob;
  kind: JobKind;
  source: SourceRef;
  target: string;
  guest: SimulatedGuest | null;
  /** What the job knows of the OPFS images it holds, for the list. */
  facts: Map<string, ImageFacts>;
}

/** Lock names of running jobs (a job id is taken while its job runs, in any tab). */
const JOB_LOCK_PREFIX = 'diskmirror-job:';
/** How many ended jobs are remembered for a retry. */
const ENDED_KEPT = 32;

export class Jobs {
  /** The QMP-shaped commands over these jobs. */
  readonly control = new MirrorControl();
  private readonly entries = new Map<string, JobEntry>();
  /** How jobs that ended here were started (for a retry), oldest first. */
  private readonly ended = new Map<string, Launch>();
  private readonly eventSinks = new Set<EventSink>();
  private readonly progressSinks = new Set<ProgressSink>();
  private readonly releasedSinks = new Set<ReleasedSink>();
  private pictureCells = 0;
  private nextJob = 0;

  constructor(
    private readonly images: ImageStore,
    /** A file the page picked, by name. */
    private readonly pickedFile: (name: string) => File | undefined,
  ) {}

  /** Hears every job's events, progress and release (see WorkerApi.subscribe). */
  listen(onEvent: EventSink, onProgress: ProgressSink, onReleased?: ReleasedSink): void {
    this.eventSinks.add(onEvent);
    this.progressSinks.add(onProgress);
    if (onReleased) this.releasedSinks.add(onReleased);
  }

  /** How many cells the picture in each progress has (0: none). */
  setPictureCells(cells: number): void {
    if (!Number.isSafeInteger(cells) || cells < 0) throw new RangeError(`picture cells ${cells}: must be a whole number, 0 or more`);
    this.pictureCells = cells;
  }

  /** A job running in this worker. */
  entry(id: string): JobEntry {
    const entry = this.entries.get(id);
    if (!entry) throw new WorkerError('no-such-job', `no job named "${id}"`);
    return entry;
  }

  /** The job of this worker that has an NBD export (by its key) as its source or target. */
  private exportHolder(key: string): { id: string; role: 'source' | 'target' } | undefined {
    for (const [id, entry] of this.entries) {
      if (exportKey(entry.target) === key) return { id, role: 'target' };
      if (entry.source.kind === 'nbd' && exportKey(entry.source.uri) === key) return { id, role: 'source' };
    }
    return undefined;
  }

  /**
   * Refuses, before anything is opened, an NBD target that is the source's
   * export, or an export another job of this worker writes (or reads, for
   * a target). An export has no lock: this is what stands in for one.
   */
  private checkExports(l: Launch): void {
    const targetKey = exportKey(l.target);
    const sourceKey = l.source.kind === 'nbd' ? exportKey(l.source.uri) : null;
    if (targetKey !== null && targetKey === sourceKey) {
      throw new ImageConflictError(l.target, `${l.target} is the same NBD export as the source: refusing to write to it; nothing was written`);
    }
    const targetHeld = targetKey === null ? undefined : this.exportHolder(targetKey);
    if (targetHeld) throw new ImageConflictError(l.target, `${l.target} is the ${targetHeld.role} of the job "${targetHeld.id}": wait until it ends`);
    const sourceHeld = sourceKey === null ? undefined : this.exportHolder(sourceKey);
    if (sourceHeld?.role === 'target') throw new ImageConflictError(describeSource(l.source), `${describeSource(l.source)} is the target of the job "${sourceHeld.id}": wait until it ends`);
  }

  /** The job of this worker that holds an image, and as what. */
  holderOf(name: string): { id: string; kind: JobKind; role: 'source' | 'target' } | undefined {
    for (const [id, entry] of this.entries) {
      if (entry.target === name) return { id, kind: entry.kind, role: 'target' };
      if (entry.source.kind === 'opfs' && entry.source.name === name) return { id, kind: entry.kind, role: 'source' };
    }
    return undefined;
  }

  /** How an ended job was started, if this worker ran it. */
  endedLaunch(id: string): Launch | undefined {
    return this.ended.get(id);
  }

  /** What a job of this worker knows of an image it holds. */
  facts(name: string): ImageFacts | undefined {
    for (const entry of this.entries.values()) {
      const facts = entry.facts.get(name);
      if (facts) return facts;
    }
    return undefined;
  }

  /** The ids of jobs running now, in this tab or another. */
  async running(): Promise<Set<string>> {
    const names = (await heldLocks().catch(() => [])).map((l) => l.name);
    return new Set([...this.entries.keys(), ...names.filter((n) => n.startsWith(JOB_LOCK_PREFIX)).map((n) => n.slice(JOB_LOCK_PREFIX.length))]);
  }

  /**
   * The one way a job starts (mirror, import, resume): everything checked
   * that can be before an image is opened, the job's id claimed, then the
   * images opened and the job built as launch.ts builds every job, made
   * known to the page, and started; it holds all of it until it ends
   * (mirror/end.ts).
   */
  async launch(l: Launch): Promise<string> {
    const exported = checkLaunch(l);
    const id = l.resume ? l.resume.id : await this.uniqueId(l.options.id);
    if (this.entries.has(id)) throw new WorkerError('job-exists', `a job named "${id}" is already running`);
    this.checkExports(l);
    const jobLock = await tryWebLock(JOB_LOCK_PREFIX + id, 'exclusive');
    if (!jobLock) throw new WorkerError('job-running', `a job named "${id}" is running in another tab`);
    const store = this.images.files({ kind: 'job', id });
    let source: JobSource | undefined;
    let ending: Ending | undefined;
    try {
      if (!l.resume) await this.refuseInterruptedTarget(l.target);
      // NBD exports beside the images: a target named nbd+ws://... opens an export.
      const exports = withExports(store);
      source = await openJobSource(l.source, store, this.pickedFile, exports);
      const launched = await launchMirror(mirrorSpec(l, id, source, store, exports));
      const end = (ending = jobEnding(store, source, launched));
      const entry = await this.register(id, l, launched, source);
      this.relay(entry, l, launched.faults);
      void launched.job.result.then((result) => this.release(id, entry, l, result.outcome, end, jobLock));
      launched.job.start();
      const numbered = /^mirror(\d+)$/.exec(id);
      if (numbered) this.nextJob = Math.max(this.nextJob, Number(numbered[1]) + 1);
      return id;
    } catch (err) {
      // launchMirror left nothing of the target behind; the source is ours to close. A job built but never started ends as a cancelled one.
      if (ending) await endMirror(ending, 'cancelled');
      else await source?.image.close().catch(() => {});
      await jobLock.release();
      throw exported ? nbdOpenError(err, l.target) : err;
    }
  }

  /** Mirroring into an interrupted job's target would spoil its resume: it is resumed or discarded first. (A running job's target is locked.) */
  private async refuseInterruptedTarget(target: string): Promise<void> {
    const running = await this.running();
    const interrupted = (await listCheckpoints()).find((c) => c.target === target && !running.has(c.id));
    if (interrupted) throw new ImageConflictError(target, `${target} is the target of the interrupted job "${interrupted.id}": resume it, or discard it first`);
  }

  /** Makes a built job known: its commands, its entry, and what the list shows of the images it holds (from the images themselves). */
  private async register(id: string, l: Launch, launched: Launched, source: JobSource): Promise<JobEntry> {
    const facts = new Map<string, ImageFacts>();
    if (source.opened) facts.set(source.name, factsOf(source.image, await source.image.info()));
    // An import copies the bytes as they are: the list shows what they hold, not the raw container.
    facts.set(l.target, l.kind === 'import' ? await contentFacts(source.image) : factsOf(launched.target.image, await launched.target.image.info()));
    this.control.add(launched.job, launched.faults);
    const entry: JobEntry = { job: launched.job, kind: l.kind, source: l.source, target: l.target, guest: null, facts };
    this.entries.set(id, entry);
    return entry;
  }

  /** What the page hears of a job: its events and its progress. An import completes by itself. */
  private relay(entry: JobEntry, l: Launch, faults: JobFaults): void {
    const { job } = entry;
    job.on(
      (event) => {
        // A stop's dialog needs no second look: the job's io-status after the error, and the fault rule behind it.
        const told: AnyQmpEvent =
          event.event === 'BLOCK_JOB_ERROR' ? { ...event, data: { ...event.data, 'io-status': job.query()['io-status'], fault: faultFacts(faults, event.data) } } : event;
        for (const sink of this.eventSinks) sink(told);
      },
      { replay: true },
    );
    if (l.kind === 'import') completeWhenReady(job);
    job.onProgress((info) => {
      const progress: JobProgress = {
        kind: l.kind,
        info,
        stats: job.stats(),
        source: describeSource(l.source),
        target: l.target,
        guest: entry.guest?.state ?? null,
        cells: this.pictureCells > 0 ? job.picture(this.pictureCells) : [],
      };
      for (const sink of this.progressSinks) sink(progress);
    });
  }

  /** Once a job is gone: its guest stopped, its end (mirror/end.ts), its id let go, and the page told. */
  private async release(id: string, entry: JobEntry, l: Launch, outcome: JobOutcome, ending: Ending, jobLock: HeldLock): Promise<void> {
    await entry.guest?.stop();
    const { sealed } = await endMirror(ending, outcome);
    this.entries.delete(id);
    this.remember(id, l);
    await jobLock.release();
    const release: JobRelease = {
      id,
      kind: l.kind,
      outcome,
      source: describeSource(l.source),
      target: l.target,
      targetImage: isNbdUri(l.target) ? null : await this.images.describe(l.target).catch(() => null),
      resumable: sealed,
    };
    for (const sink of this.releasedSinks) sink(release);
  }

  private remember(id: string, l: Launch): void {
    const { resume: _resume, ...launch } = l;
    this.ended.delete(id);
    this.ended.set(id, launch);
    while (this.ended.size > ENDED_KEPT) this.ended.delete(this.ended.keys().next().value!);
  }

  /** A job id used neither by a running job (any tab) nor by an interrupted one (whose checkpoint it would overwrite). */
  private async uniqueId(wanted?: string): Promise<string> {
    const stored = new Set((await listCheckpoints()).map((c) => c.id));
    const running = await this.running();
    if (wanted !== undefined) {
      if (running.has(wanted)) throw new WorkerError('job-exists', `a job named "${wanted}" is already running`);
      if (stored.has(wanted)) throw new WorkerError('job-exists', `an interrupted job is named "${wanted}": resume or discard it first, or choose another ID`);
      return wanted;
    }
    // Numbers go up as jobs start (a refused start uses none), skipping ids in use anywhere.
    let n = this.nextJob;
    while (running.has(`mirror${n}`) || stored.has(`mirror${n}`)) n++;
    return `mirror${n}`;
  }
}

/**
 * Refuses, before an image is opened, what can be: names, a resume with an
 * NBD export on either side, an unknown target format, any option. True
 * when the target is an NBD export.
 */
function checkLaunch(l: Launch): boolean {
  const exported = isNbdUri(l.target);
  if (exported) checkExportUri(l.target);
  else checkOpfsName(l.target);
  if (l.source.kind === 'nbd') checkExportUri(l.source.uri);
  // An export has no lock and no modification time: nothing could tell whether it changed before a resume.
  if (l.resume && (exported || l.source.kind === 'nbd')) throw new WorkerError('no-checkpoint', 'a job with an NBD export on either side cannot be resumed (nothing can check an export for changes); mirror again');
  if (l.targetFormat !== undefined && !FORMAT_NAMES.includes(l.targetFormat)) {
    throw new FormatError(`Unknown target format '${String(l.targetFormat)}' (expected ${formatNamesText()})`, 'format');
  }
  resolveOptions(l.options, { targetIsZero: false });
  return exported;
}

/**
 * How launch.ts builds this job: over the job's own store (and the NBD
 * exports beside it), a resume checked against its checkpoint, and a
 * checkpoint in IndexedDB. A job writing an export keeps none; one reading
 * an export into OPFS keeps one, not to resume, but so that an interrupted
 * copy is listed, and its target shown incomplete, until it is discarded.
 */
function mirrorSpec(l: Launch, id: string, source: JobSource, store: OpfsFileStore, exports: NbdAwareStore): LaunchSpec<IdbCheckpointer> {
  const exported = isNbdUri(l.target);
  // An export is read as raw unless told otherwise (as qemu-img's -f raw over NBD): never probed.
  const targetFormat = l.targetFormat ?? (exported ? 'raw' : undefined);
  return {
    store: exports,
    source: { image: source.image, name: source.name, opened: source.opened?.() ?? null },
    target: l.target,
    ...(targetFormat ? { targetFormat } : {}),
    options: { ...l.options, id },
    ...(l.faults ? { faults: l.faults } : {}),
    // Everything lives in one directory: a backing file is named as the source's directory reaches it.
    backingName: (backing, sourceName) => store.backingName(backing, sourceName),
    onExisting: async (target) => {
      if (exported) {
        checkExportSize(l.target, target.image.size, source);
        return null;
      }
      if (!l.resume) return null;
      await checkResumeImages(l.resume, source, store, target);
      return { options: { ...l.options, id }, resume: { bitmap: l.resume.bitmap } };
    },
    onMissing: async () => {
      if (l.resume) throw new WorkerError('target-gone', `the target "${l.target}" is gone; the job cannot resume`);
    },
    publish: publishOrDrop,
    ...(exported
      ? {}
      : {
          checkpointer: (target: OpenedImage) =>
            new IdbCheckpointer(id, { kind: l.kind, source: l.source, target: l.target, targetFormat: target.image.format }, async () => ({
              source: await source.stamps(),
              // Periodic checkpoints stamp the target without its digest: the job goes on writing it.
              target: (await stampChain(store, target, false))[0]!,
            })),
        }),
    checkpointIntervalSeconds: CHECKPOINT_INTERVAL_SECONDS,
  };
}

/** How a job of this worker ends (mirror/end.ts): OPFS removes a file under its lock, so a target is dropped once closed. */
function jobEnding(store: OpfsFileStore, source: JobSource, launched: Launched<IdbCheckpointer>): Ending {
  return {
    store,
    source: { image: source.image, name: source.name, opened: source.opened?.() ?? null },
    sourceStamps: () => source.stamps(),
    launched,
    dropOnceClosed: true,
  };
}

/** An import is a copy: once everything is copied (READY, again after a pause), it completes by itself. */
function completeWhenReady(job: MirrorJob): void {
  job.on((event) => {
    if (event.event !== 'JOB_STATUS_CHANGE' || event.data.status !== 'ready') return;
    queueMicrotask(() => {
      try {
        if (job.status === 'ready') job.complete();
      } catch {
        // Paused or ending meanwhile: the next READY completes it.
      }
    });
  });
}

/** An export is mirrored into only when it is the source's size: it is never created or resized here. */
function checkExportSize(target: string, size: number, source: JobSource): void {
  if (size === source.image.size) return;
  throw new WorkerError(
    'nbd-wrong-size',
    `${target} holds ${size} bytes and the source ${source.name} ${source.image.size}: an NBD export is mirrored into only when its size is the source's (it is never created or resized here)`,
  );
}

function factsOf(image: ImageFormat, info: { virtualSize: number; backingFile?: string }): ImageFacts {
  const facts: ImageFacts = { format: image.format, virtualSize: info.virtualSize };
  if (info.backingFile) facts.backingFile = info.backingFile;
  return facts;
}

/**
 * Refuses a resume onto images that changed since the checkpoint, naming
 * what changed (as the command line does). The source must be exactly as
 * stamped. The target too, when the checkpoint was sealed after the job's
 * last write; otherwise (a closed tab) the job itself wrote it after its
 * last checkpoint, until its heartbeat stopped: only another file, another
 * size or format, or a modification after that counts.
 */
async function checkResumeImages(checkpoint: StoredCheckpoint, source: JobSource, store: OpfsFileStore, target: OpenedImage): Promise<void> {
  const final = checkpoint.final === true;
  refuseChangedImages(
    { ...checkpoint.images, final, writesEndedMs: await writesEnded(checkpoint), sourceWriting: checkpoint.sourceWriting === true },
    { source: await source.stamps(), target: (await stampChain(store, target, final))[0]! },
    { source: describeSource(checkpoint.source), target: checkpoint.target },
    'discard the interrupted job and mirror again (everything is copied again)',
  );
}
