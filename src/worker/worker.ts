/**
 * The mirror worker: owns the images in OPFS and the jobs, and exposes them
 * to the page with comlink. Sync access handles only exist in dedicated
 * workers, so every byte of I/O happens here, never on the page's thread.
 *
 * Every job opens and creates its images through image-access.ts over an
 * OpfsFileStore (Web Locks; see ARCHITECTURE.md, "Who may touch an image"),
 * and holds them, and a lock on its own id, for its whole life.
 */
import * as Comlink from 'comlink';
import { BlobDevice } from '../block/blob.js';
import { type FileIdentity, BlockError, ImageConflictError } from '../block/block-device.js';
import { HttpDevice } from '../block/http.js';
import { heldLocks, holderWords, imageLocks, setLockTab, tryWebLock } from '../block/opfs-lock.js';
import { type OpfsFileStore, checkOpfsName } from '../block/opfs-store.js';
import { type OpenedImage, WritableOnDemand, openChain } from '../format/image-access.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES } from '../format/image-format.js';
import { type ImageStamp, refuseChangedImages, stampChain, stampImage } from '../format/image-stamp.js';
import { openImage } from '../format/open.js';
import { RawImage } from '../format/raw.js';
import { MirrorControl } from '../mirror/control.js';
import { type Launched, launchMirror } from '../mirror/launch.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import type { MirrorJob } from '../mirror/mirror-job.js';
import type { BlockJobInfo, CellState, JobStats } from '../mirror/types.js';
import { type MirrorOptions, givenOptions, resolveOptions } from '../mirror/options.js';
import { installErrorTransfer } from './error-transfer.js';
import { type ImageEntry, type ImageFacts, ImageStore, publishOrDrop } from './image-store.js';
import {
  type CheckpointImages,
  type SourceRef,
  type StoredCheckpoint,
  IdbCheckpointer,
  deleteCheckpoint,
  getCheckpoint,
  getHeartbeat,
  listCheckpoints,
  unresumable,
} from './checkpoint-store.js';
import { GuestWriter, type GuestStats } from './guest.js';
import { describeSource } from './source-ref.js';

installErrorTransfer();

// The page names its tab in the worker's name, so the locks taken here say which tab holds them.
const tabId = /^diskmirror (.+)$/.exec((self as unknown as { name?: string }).name ?? '')?.[1];
if (tabId) setLockTab(tabId);

export type { SourceRef } from './checkpoint-store.js';
export type { ImageEntry } from './image-store.js';
export type { GuestStats } from './guest.js';

export interface StartMirrorRequest {
  source: SourceRef;
  target: string;
  /** Format of a target the job creates; default: the source's. An existing target keeps its own. */
  targetFormat?: FormatName;
  options: MirrorOptions;
}

/** What the page shows for a job besides QEMU's fields. */
export interface JobProgress {
  info: BlockJobInfo;
  stats: JobStats;
  source: string;
  target: string;
  guest: GuestStats | null;
}

export interface InterruptedJob {
  id: string;
  source: string;
  target: string;
  status: string;
  savedAt: number;
  dirtyBytes: number;
  size: number;
  /** Why it cannot be resumed here, if it cannot. */
  problem?: string;
}

type EventSink = (event: AnyQmpEvent) => void;
type ProgressSink = (progress: JobProgress) => void;
/** A job let go of its images and its checkpoint is final (sealed, or removed). */
type ReleasedSink = (id: string) => void;

interface JobEntry {
  job: MirrorJob;
  source: SourceRef;
  target: string;
  guest: GuestWriter | null;
  /** What the job knows of the OPFS images it holds, for the list. */
  facts: Map<string, ImageFacts>;
}

/** Lock names of running jobs (a job id is taken while its job runs, in any tab). */
const JOB_LOCK_PREFIX = 'diskmirror-job:';

const images = new ImageStore();
const control = new MirrorControl();
const jobs = new Map<string, JobEntry>();
const pickedFiles = new Map<string, File>();
const eventSinks = new Set<EventSink>();
const progressSinks = new Set<ProgressSink>();
const releasedSinks = new Set<ReleasedSink>();
let nextJob = 0;

// ---- sources ---------------------------------------------------------------------

/** A job's source, however it is reached. */
interface JobSource {
  /** What the job reads (and a guest writes, for an image in OPFS). */
  image: ImageFormat;
  /** The source's name, for messages. */
  name: string;
  /** For an image in OPFS: its chain as open now. */
  opened: (() => OpenedImage) | null;
  /** The stamps of the source's chain now. */
  stamps(): Promise<ImageStamp[]>;
}

/**
 * Opens a job's source. An image in OPFS opens read-only with shared locks
 * (backing files too) and is reopened read-write on a guest's first write;
 * a picked file or a URL is read-only.
 */
async function openJobSource(ref: SourceRef, store: OpfsFileStore): Promise<JobSource> {
  if (ref.kind === 'opfs') {
    const open = (readOnly: boolean) => openChain(store, ref.name, { readOnly });
    const image = new WritableOnDemand(await open(true), open);
    return { image, name: ref.name, opened: () => image.current, stamps: () => stampChain(store, image.current, true) };
  }
  let image: ImageFormat;
  let identity: FileIdentity;
  let name: string;
  if (ref.kind === 'file') {
    const file = pickedFiles.get(ref.name);
    if (!file) throw new BlockError('ENOENT', 'open', 0, 0, `the picked file "${ref.name}" is gone; pick it again`);
    const device = new BlobDevice(file, ref.name);
    image = ref.raw ? new RawImage(device) : await openImage(device, { name: ref.name });
    identity = { key: `file:${ref.name}`, size: file.size, modifiedMs: file.lastModified };
    name = ref.name;
  } else {
    const device = await HttpDevice.open(ref.url);
    try {
      image = ref.raw ? new RawImage(device) : await openImage(device, { name: ref.url, resolve: (n) => HttpDevice.open(new URL(n, ref.url).href) });
    } catch (err) {
      await device.close().catch(() => {});
      throw err;
    }
    identity = { key: `url:${ref.url}`, size: device.size, modifiedMs: 0 };
    name = ref.url;
  }
  // Nothing here writes these: stamped once.
  try {
    const stamp = await stampImage(image, name, identity, { digest: true });
    return { image, name, opened: null, stamps: async () => [stamp] };
  } catch (err) {
    await image.close().catch(() => {});
    throw err;
  }
}

// ---- ids ---------------------------------------------------------------------------

/** The ids of jobs running now, in this tab or another. */
async function runningJobIds(): Promise<Set<string>> {
  const names = (await heldLocks().catch(() => [])).map((l) => l.name);
  return new Set([...jobs.keys(), ...names.filter((n) => n.startsWith(JOB_LOCK_PREFIX)).map((n) => n.slice(JOB_LOCK_PREFIX.length))]);
}

/** A job id used neither by a running job (any tab) nor by an interrupted one (whose checkpoint it would overwrite). */
async function uniqueJobId(wanted?: string): Promise<string> {
  const stored = new Set((await listCheckpoints()).map((c) => c.id));
  const running = await runningJobIds();
  if (wanted !== undefined) {
    if (running.has(wanted)) throw new BlockError('EEXIST', 'open', 0, 0, `a job named "${wanted}" is already running`);
    if (stored.has(wanted)) throw new BlockError('EEXIST', 'open', 0, 0, `an interrupted job is named "${wanted}": resume or discard it first, or choose another ID`);
    return wanted;
  }
  // Numbers go up as jobs start (a refused start uses none), skipping ids in use anywhere.
  let n = nextJob;
  while (running.has(`mirror${n}`) || stored.has(`mirror${n}`)) n++;
  return `mirror${n}`;
}

// ---- resume checks -------------------------------------------------------------------

/**
 * Refuses a resume onto images that changed since the checkpoint, naming
 * what changed (as the command line does). The source must be exactly as
 * stamped. The target too, when the checkpoint was sealed after the job's
 * last write; otherwise (a closed tab) the job itself wrote it after its
 * last checkpoint, until its heartbeat stopped: only another file, another
 * size or format, or a modification after that counts.
 */
async function checkResumeImages(checkpoint: StoredCheckpoint, source: JobSource, store: OpfsFileStore, target: OpenedImage): Promise<void> {
  const images = checkpoint.images!;
  const final = checkpoint.final === true;
  const heartbeat = await getHeartbeat(checkpoint.id);
  refuseChangedImages(
    { ...images, final, writesEndedMs: Math.max(heartbeat?.at ?? 0, checkpoint.savedAt) },
    { source: await source.stamps(), target: (await stampChain(store, target, final))[0]! },
    { source: describeSource(checkpoint.source), target: checkpoint.target },
    'discard the interrupted job and mirror again (everything is copied again)',
  );
}

// ---- launching -------------------------------------------------------------------------

interface Launch {
  source: SourceRef;
  target: string;
  /** The format of a target the job creates (default: the source's); an existing target is opened as this format if given. */
  targetFormat?: FormatName;
  options: MirrorOptions;
  resume?: StoredCheckpoint;
}

function factsOf(image: ImageFormat, info: { virtualSize: number; backingFile?: string }): ImageFacts {
  const facts: ImageFacts = { format: image.format, virtualSize: info.virtualSize };
  if (info.backingFile) facts.backingFile = info.backingFile;
  return facts;
}

/**
 * The one way a job starts (mirror, import, resume): options checked, then
 * the source opened (shared), the target refused if it is the source or in
 * its backing chain, an existing target opened exclusive (and checked
 * against the checkpoint on a resume), a new one made aside and published;
 * then the job runs, holding all of it until it ends.
 */
async function launch(l: Launch): Promise<string> {
  checkOpfsName(l.target);
  if (l.targetFormat !== undefined && !FORMAT_NAMES.includes(l.targetFormat)) {
    throw new FormatError(`Unknown target format '${String(l.targetFormat)}' (expected raw or qcow2)`, 'format');
  }
  // Every option is checked before an image is opened or made.
  resolveOptions(l.options, { targetIsZero: false });
  const id = l.resume ? l.resume.id : await uniqueJobId(l.options.id);
  if (jobs.has(id)) throw new BlockError('EEXIST', 'open', 0, 0, `a job named "${id}" is already running`);
  const jobLock = await tryWebLock(JOB_LOCK_PREFIX + id, 'exclusive');
  if (!jobLock) throw new BlockError('EBUSY', 'open', 0, 0, `a job named "${id}" is running in another tab`);
  const store = images.files(`the job "${id}"`);
  let source: JobSource | undefined;
  let launched: Launched | undefined;
  try {
    if (!l.resume) {
      // Mirroring into it would spoil that job's resume: it is resumed or discarded first. (A running job's target is locked.)
      const running = await runningJobIds();
      const interrupted = (await listCheckpoints()).find((c) => c.target === l.target && !running.has(c.id));
      if (interrupted) throw new ImageConflictError(l.target, `${l.target} is the target of the interrupted job "${interrupted.id}": resume it, or discard it first`);
    }
    source = await openJobSource(l.source, store);
    const jobSource = source;
    let checkpointer: IdbCheckpointer | undefined;
    launched = await launchMirror({
      store,
      source: { image: source.image, name: source.name, opened: source.opened?.() ?? null },
      target: l.target,
      ...(l.targetFormat ? { targetFormat: l.targetFormat } : {}),
      options: { ...l.options, id },
      // Everything lives in one directory: a backing file is named as the source's directory reaches it.
      backingName: (backing, sourceName) => store.backingName(backing, sourceName),
      onExisting: async (target) => {
        if (!l.resume) return null;
        await checkResumeImages(l.resume, jobSource, store, target);
        return { options: { ...l.options, id }, resume: { bitmap: l.resume.bitmap } };
      },
      onMissing: async () => {
        if (l.resume) throw new BlockError('ENOENT', 'open', 0, 0, `the target "${l.target}" is gone; the job cannot resume`);
      },
      publish: publishOrDrop,
      // Periodic checkpoints stamp the target without its digest: the job goes on writing it.
      checkpointer: (target) =>
        (checkpointer = new IdbCheckpointer({ source: l.source, target: l.target, targetFormat: target.image.format }, async () => ({
          source: await jobSource.stamps(),
          target: (await stampChain(store, target, false))[0]!,
        }))),
      checkpointIntervalSeconds: 2,
    });
    const { job, target: targetOpened, faults } = launched;
    const jobCheckpointer = checkpointer!;
    // What the list shows of the images this job holds, from the images themselves.
    const facts = new Map<string, ImageFacts>();
    if (source.opened) facts.set(source.name, factsOf(source.image, await source.image.info()));
    facts.set(l.target, factsOf(targetOpened.image, await targetOpened.image.info()));
    control.add(job, faults);
    const entry: JobEntry = { job, source: l.source, target: l.target, guest: null, facts };
    jobs.set(id, entry);
    job.on(
      (event) => {
        for (const sink of eventSinks) sink(event);
      },
      { replay: true },
    );
    job.onProgress((info) => {
      const progress: JobProgress = {
        info,
        stats: job.stats(),
        source: describeSource(l.source),
        target: l.target,
        guest: entry.guest?.state ?? null,
      };
      for (const sink of progressSinks) sink(progress);
    });
    const made = launched;
    void job.result.then(async (result) => {
      await entry.guest?.stop();
      await jobSource.image.close().catch(() => {});
      await targetOpened.image.close().catch(() => {});
      if (result.outcome !== 'completed' && (await made.dropIfUnwritten())) {
        // Nothing was copied into the target this job made: it went, and its checkpoint goes too.
        await jobCheckpointer.remove(id).catch(() => {});
      } else if (result.outcome === 'failed') {
        // A failed job keeps its checkpoint (fix the cause, then resume): seal it now that nothing writes.
        await sealCheckpoint(jobCheckpointer, jobSource, l, store, targetOpened.image.format).catch(() => {});
      }
      jobCheckpointer.stop();
      jobs.delete(id);
      await jobLock.release();
      for (const sink of releasedSinks) sink(id);
    });
    job.start();
    const numbered = /^mirror(\d+)$/.exec(id);
    if (numbered) nextJob = Math.max(nextJob, Number(numbered[1]) + 1);
    return id;
  } catch (err) {
    // launchMirror left nothing of the target behind; the source is ours to close.
    await source?.image.close().catch(() => {});
    if (launched) {
      await launched.target.image.close().catch(() => {});
      await launched.dropIfUnwritten();
    }
    await jobLock.release();
    throw err;
  }
}

/**
 * Stamps the closed images again (opened read-only: nothing writes on such
 * an open) and seals the checkpoint with them. A source outside OPFS was
 * stamped once and never written.
 */
async function sealCheckpoint(checkpointer: IdbCheckpointer, source: JobSource, l: Launch, store: OpfsFileStore, targetFormat: FormatName): Promise<void> {
  const reopen = async <T>(name: string, format: FormatName | undefined, fn: (opened: OpenedImage) => Promise<T>): Promise<T> => {
    const opened = await openChain(store, name, { readOnly: true, ...(format ? { format } : {}) });
    try {
      return await fn(opened);
    } finally {
      await opened.image.close();
    }
  };
  try {
    const sourceStamps = source.opened ? await reopen(source.name, source.image.format, (o) => stampChain(store, o, true)) : await source.stamps();
    const targetStamp = await reopen(l.target, targetFormat, async (o) => (await stampChain(store, o, true))[0]!);
    await checkpointer.seal({ source: sourceStamps, target: targetStamp });
  } finally {
    checkpointer.stop();
  }
}

function entryOf(id: string): JobEntry {
  const entry = jobs.get(id);
  if (!entry) throw new BlockError('ENOENT', 'open', 0, 0, `no job named "${id}"`);
  return entry;
}

/** What a job of this worker knows of an image it holds. */
function jobFacts(name: string): ImageFacts | undefined {
  for (const entry of jobs.values()) {
    const facts = entry.facts.get(name);
    if (facts) return facts;
  }
  return undefined;
}

const api = {
  /** The images, each with who holds it now (any tab). */
  async listImages(): Promise<ImageEntry[]> {
    const list = await images.list(jobFacts);
    const locks = await imageLocks().catch(() => new Map<string, never>());
    for (const image of list) {
      const state = locks.get(image.name);
      if (state) image.inUse = `in use by ${holderWords(state)}`;
    }
    return list;
  },

  async createDemoImage(name?: string): Promise<ImageEntry> {
    await images.createDemo(name);
    return (await images.describe(name ?? 'demo.raw'))!;
  },

  async createImage(name: string, format: FormatName, virtualSize: number): Promise<ImageEntry> {
    await images.create(name, format, virtualSize);
    return (await images.describe(name))!;
  },

  /** Deletes an image; refused with the lock's message while anybody holds it. */
  async deleteImage(name: string): Promise<void> {
    return images.remove(name);
  },

  async sha256(name: string): Promise<string> {
    return images.sha256(name);
  },

  /** Keeps a picked file so it can be a mirror source directly (until the page goes away). */
  addPickedFile(file: File): SourceRef {
    pickedFiles.set(file.name, file);
    return { kind: 'file', name: file.name };
  },

  pickedFileNames(): string[] {
    return [...pickedFiles.keys()];
  },

  /** Copies a picked file's bytes into OPFS (the format comes along as it is). */
  async importFile(file: File, name: string, options: Partial<MirrorOptions> = {}): Promise<string> {
    pickedFiles.set(file.name, file);
    return launch({ source: { kind: 'file', name: file.name, raw: true }, target: name, targetFormat: 'raw', options: { sync: 'full', ...options } });
  },

  /** Copies a URL's bytes into OPFS with Range requests; network errors meet on-source-error. */
  async importUrl(url: string, name: string, options: Partial<MirrorOptions> = {}): Promise<string> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new FormatError(`"${url}" is not a URL`, 'url');
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new FormatError(`"${url}" is not an http(s) URL`, 'url');
    return launch({ source: { kind: 'url', url: parsed.href, raw: true }, target: name, targetFormat: 'raw', options: { sync: 'full', ...options } });
  },

  /**
   * Hears every job's events (QMP-shaped), progress snapshots (at most ~10
   * a second per job), and when a job that ended has let go of its images
   * (they can be deleted, and a failed job resumed, from then on).
   */
  subscribe(onEvent: EventSink, onProgress: ProgressSink, onReleased?: ReleasedSink): void {
    eventSinks.add(onEvent);
    progressSinks.add(onProgress);
    if (onReleased) releasedSinks.add(onReleased);
  },

  async startMirror(request: StartMirrorRequest): Promise<string> {
    return launch({
      source: request.source,
      target: request.target,
      ...(request.targetFormat ? { targetFormat: request.targetFormat } : {}),
      options: request.options,
    });
  },

  /** Runs one QMP-shaped command (job-pause, job-resume, block-job-cancel, fault-add...). */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    return control.execute(command, args);
  },

  /** The bitmap picture for a job, `cells` cells wide. */
  picture(id: string, cells: number): CellState[] {
    return jobs.get(id)?.job.picture(cells) ?? [];
  },

  startGuestWrites(id: string, bytesPerSecond: number): GuestStats {
    const entry = entryOf(id);
    entry.guest ??= new GuestWriter(entry.job, bytesPerSecond);
    entry.guest.setRate(bytesPerSecond);
    entry.guest.start();
    return entry.guest.state;
  },

  async stopGuestWrites(id: string): Promise<GuestStats | null> {
    const entry = entryOf(id);
    await entry.guest?.stop();
    return entry.guest?.state ?? null;
  },

  /** Jobs with a checkpoint but no live job (here or in another tab): a closed tab, a dead worker, a failure. */
  async listInterrupted(): Promise<InterruptedJob[]> {
    const stored = await listCheckpoints();
    const running = await runningJobIds();
    return stored
      .filter((c) => !running.has(c.id))
      .map((c) => {
        const item: InterruptedJob = {
          id: c.id,
          source: describeSource(c.source),
          target: c.target,
          status: c.status,
          savedAt: c.savedAt,
          dirtyBytes: c.dirtyBytes,
          size: c.size,
        };
        const problem = unresumable(c) ?? (c.source.kind === 'file' && !pickedFiles.has(c.source.name) ? `pick "${c.source.name}" again to resume` : null);
        if (problem) item.problem = problem;
        return item;
      });
  },

  async resumeInterrupted(id: string): Promise<string> {
    const checkpoint = await getCheckpoint(id);
    if (!checkpoint) throw new BlockError('ENOENT', 'open', 0, 0, `no checkpoint for a job named "${id}"`);
    if ((await runningJobIds()).has(id)) throw new BlockError('EBUSY', 'open', 0, 0, `the job "${id}" is running`);
    const problem = unresumable(checkpoint);
    if (problem) throw new ImageConflictError(checkpoint.target, `the checkpoint of "${id}" was ${problem}`);
    return launch({
      source: checkpoint.source,
      target: checkpoint.target,
      targetFormat: checkpoint.targetFormat,
      options: givenOptions(checkpoint.options),
      resume: checkpoint,
    });
  },

  async discardInterrupted(id: string): Promise<void> {
    if ((await runningJobIds()).has(id)) throw new BlockError('EBUSY', 'open', 0, 0, `the job "${id}" is running`);
    await deleteCheckpoint(id);
  },
};

export type WorkerApi = typeof api;

Comlink.expose(api);
