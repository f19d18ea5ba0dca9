/**
 * The mirror worker: owns the images in OPFS and the jobs, and exposes them
 * to the page with comlink. Sync access handles only exist in dedicated
 * workers, so every byte of I/O happens here, never on the page's thread.
 */
import * as Comlink from 'comlink';
import { BlobDevice } from '../block/blob.js';
import { BlockError } from '../block/block-device.js';
import { FaultRules } from '../block/fault.js';
import { HttpDevice } from '../block/http.js';
import { FaultImage } from '../format/fault-image.js';
import { type FormatName, type ImageFormat, FormatError } from '../format/image-format.js';
import { openImage } from '../format/open.js';
import { repairLeaks } from '../format/repair.js';
import { RawImage } from '../format/raw.js';
import { MirrorControl } from '../mirror/control.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import { type BlockJobInfo, type CellState, type JobStats, MirrorJob } from '../mirror/mirror-job.js';
import type { MirrorOptions, ResolvedOptions } from '../mirror/options.js';
import { installErrorTransfer } from './error-transfer.js';
import { type ImageEntry, ImageStore, checkImageName } from './image-store.js';
import { IdbCheckpointer, type SourceRef, type StoredCheckpoint, deleteCheckpoint, getCheckpoint, listCheckpoints } from './checkpoint-store.js';
import { GuestWriter, type GuestStats } from './guest.js';
import { describeSource } from './source-ref.js';

installErrorTransfer();

export type { SourceRef } from './checkpoint-store.js';
export type { ImageEntry } from './image-store.js';
export type { GuestStats } from './guest.js';

export interface StartMirrorRequest {
  source: SourceRef;
  target: string;
  /** Format of a target the job creates; default: the source's. */
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

interface JobEntry {
  job: MirrorJob;
  source: SourceRef;
  target: string;
  guest: GuestWriter | null;
}

const store = new ImageStore();
const control = new MirrorControl();
const jobs = new Map<string, JobEntry>();
const pickedFiles = new Map<string, File>();
const eventSinks = new Set<EventSink>();
const progressSinks = new Set<ProgressSink>();
let nextJob = 0;

async function closeQuietly(image: ImageFormat | undefined): Promise<void> {
  await image?.close().catch(() => {});
}

/** Opens a job's source. An OPFS source is opened writable, so the guest can write to it. */
async function openSource(ref: SourceRef): Promise<ImageFormat> {
  if (ref.kind === 'opfs') return store.open(ref.name);
  if (ref.kind === 'file') {
    const file = pickedFiles.get(ref.name);
    if (!file) throw new BlockError('ENOENT', 'open', 0, 0, `the picked file "${ref.name}" is gone; pick it again`);
    const device = new BlobDevice(file, ref.name);
    return ref.raw ? new RawImage(device) : openImage(device, { name: ref.name });
  }
  const device = await HttpDevice.open(ref.url);
  if (ref.raw) return new RawImage(device);
  return openImage(device, { name: ref.url, resolve: (name) => HttpDevice.open(new URL(name, ref.url).href) });
}

/** A job id not used by a running job nor by an interrupted one (whose checkpoint it would overwrite). */
async function uniqueJobId(wanted?: string): Promise<string> {
  const stored = new Set((await listCheckpoints()).map((c) => c.id));
  if (wanted) return wanted;
  let id: string;
  do id = `mirror${nextJob++}`;
  while (jobs.has(id) || stored.has(id));
  return id;
}

interface Launch {
  source: ImageFormat;
  sourceRef: SourceRef;
  target: string;
  targetFormat: FormatName;
  options: MirrorOptions;
  resume?: StoredCheckpoint;
}

/** Creates (or opens) the target, builds the job with faults and a checkpointer, starts it. */
async function launch(l: Launch): Promise<string> {
  let target: ImageFormat | undefined;
  try {
    const id = l.resume ? l.resume.id : await uniqueJobId(l.options.id);
    if (jobs.has(id)) throw new BlockError('EEXIST', 'open', 0, 0, `a job named "${id}" is already running`);
    checkImageName(l.target);
    const targetCreated = !(await store.exists(l.target));
    if (l.resume && targetCreated) throw new BlockError('ENOENT', 'open', 0, 0, `the target "${l.target}" is gone; the job cannot resume`);
    if (targetCreated) {
      // sync=top copies only the top image: a new target sits on the source's backing file (same directory).
      const info = await l.source.info();
      const backing = l.options.sync === 'top' && info.backingFile ? { file: info.backingFile.split(/[/\\]/).pop()!, ...(info.backingFormat ? { format: info.backingFormat } : {}) } : undefined;
      if (backing && l.targetFormat !== 'qcow2') {
        throw new FormatError(`sync "top" needs a target that can have a backing file: choose qcow2 (the source's backing file is ${info.backingFile})`, 'format');
      }
      target = await store.create(l.target, l.targetFormat, l.source.size, backing);
    } else {
      target = await store.open(l.target);
      // An interrupted job may have left leaked clusters in a qcow2 target: give them back first.
      await repairLeaks(target);
    }
    const faults = { source: new FaultRules(), target: new FaultRules() };
    const job = await MirrorJob.create({
      source: new FaultImage(l.source, faults.source),
      target: new FaultImage(target, faults.target),
      options: { ...l.options, id },
      targetCreated,
      ...(l.resume ? { resume: { bitmap: l.resume.bitmap } } : {}),
      checkpointer: new IdbCheckpointer({ source: l.sourceRef, target: l.target, targetFormat: target.format }),
      checkpointIntervalSeconds: 2,
    });
    control.add(job, faults);
    const entry: JobEntry = { job, source: l.sourceRef, target: l.target, guest: null };
    jobs.set(id, entry);
    job.on((event) => {
      for (const sink of eventSinks) sink(event);
    }, { replay: true });
    job.onProgress((info) => {
      const progress: JobProgress = {
        info,
        stats: job.stats(),
        source: describeSource(l.sourceRef),
        target: l.target,
        guest: entry.guest?.state ?? null,
      };
      for (const sink of progressSinks) sink(progress);
    });
    const opened = [l.source, target];
    void job.result.finally(async () => {
      await entry.guest?.stop();
      await Promise.all(opened.map(closeQuietly));
      jobs.delete(id);
    });
    job.start();
    return id;
  } catch (err) {
    await closeQuietly(l.source);
    await closeQuietly(target);
    throw err;
  }
}

function entryOf(id: string): JobEntry {
  const entry = jobs.get(id);
  if (!entry) throw new BlockError('ENOENT', 'open', 0, 0, `no job named "${id}"`);
  return entry;
}

function fromResolved(o: ResolvedOptions): MirrorOptions {
  return {
    id: o.id,
    sync: o.sync,
    granularity: o.granularity,
    'buf-size': o.bufSize,
    speed: o.speed,
    'on-source-error': o.onSourceError,
    'on-target-error': o.onTargetError,
    'copy-mode': o.copyMode,
    unmap: o.unmap,
    // What the target held when the job stopped is not known: write zeroes where needed.
    'target-is-zero': false,
  };
}

const api = {
  async listImages(): Promise<ImageEntry[]> {
    const busy = new Set([...jobs.values()].flatMap((e) => [e.target, e.source.kind === 'opfs' ? e.source.name : '']));
    const images = await store.list();
    for (const image of images) if (busy.has(image.name)) image.note = 'in use by a job';
    return images;
  },

  async createDemoImage(name?: string): Promise<ImageEntry> {
    return store.createDemo(name);
  },

  async createImage(name: string, format: FormatName, virtualSize: number): Promise<ImageEntry> {
    const image = await store.create(name, format, virtualSize);
    await image.close();
    return store.describe(name);
  },

  async deleteImage(name: string): Promise<void> {
    if ([...jobs.values()].some((e) => e.target === name || (e.source.kind === 'opfs' && e.source.name === name))) {
      throw new BlockError('EBUSY', 'open', 0, 0, `"${name}" is in use by a job`);
    }
    return store.remove(name);
  },

  async sha256(name: string): Promise<string> {
    return store.sha256(name);
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
    const ref: SourceRef = { kind: 'file', name: file.name, raw: true };
    const source = await openSource(ref);
    return launch({ source, sourceRef: ref, target: name, targetFormat: 'raw', options: { sync: 'full', ...options } });
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
    const ref: SourceRef = { kind: 'url', url: parsed.href, raw: true };
    const source = await openSource(ref);
    return launch({ source, sourceRef: ref, target: name, targetFormat: 'raw', options: { sync: 'full', ...options } });
  },

  /** Hears every job's events (QMP-shaped) and progress snapshots (at most ~10 a second per job). */
  subscribe(onEvent: EventSink, onProgress: ProgressSink): void {
    eventSinks.add(onEvent);
    progressSinks.add(onProgress);
  },

  async startMirror(request: StartMirrorRequest): Promise<string> {
    const source = await openSource(request.source);
    return launch({
      source,
      sourceRef: request.source,
      target: request.target,
      targetFormat: request.targetFormat ?? source.format,
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

  /** Jobs with a checkpoint but no live job here: a closed tab, a dead worker, a failure. */
  async listInterrupted(): Promise<InterruptedJob[]> {
    const stored = await listCheckpoints();
    return stored
      .filter((c) => !jobs.has(c.id))
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
        if (c.source.kind === 'file' && !pickedFiles.has(c.source.name)) item.problem = `pick "${c.source.name}" again to resume`;
        return item;
      });
  },

  async resumeInterrupted(id: string): Promise<string> {
    const checkpoint = await getCheckpoint(id);
    if (!checkpoint) throw new BlockError('ENOENT', 'open', 0, 0, `no checkpoint for a job named "${id}"`);
    if (jobs.has(id)) throw new BlockError('EBUSY', 'open', 0, 0, `the job "${id}" is running`);
    const source = await openSource(checkpoint.source);
    return launch({
      source,
      sourceRef: checkpoint.source,
      target: checkpoint.target,
      targetFormat: checkpoint.targetFormat,
      options: fromResolved(checkpoint.options),
      resume: checkpoint,
    });
  },

  async discardInterrupted(id: string): Promise<void> {
    await deleteCheckpoint(id);
  },
};

export type WorkerApi = typeof api;

Comlink.expose(api);
