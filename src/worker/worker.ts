/**
 * The mirror worker: owns the images in OPFS and the jobs, and exposes them
 * to the page with comlink. Sync access handles only exist in dedicated
 * workers, so every byte of I/O happens here, never on the page's thread:
 * the page learns of images, jobs and checkpoints only through this API
 * (its types in api-types.ts), and errors reach it with their class and
 * code (error-transfer.ts).
 *
 * The images are ImageStore's (image-store.ts), the jobs are Jobs'
 * (jobs.ts); checkpoints live in IndexedDB (checkpoint-store.ts).
 */
import * as Comlink from 'comlink';
import { ImageConflictError } from '../block/block-device.js';
import { holderWords, imageLocks } from '../block/opfs-lock.js';
import { type FormatName, FormatError } from '../format/image-format.js';
import { parseFaultSpec } from '../qapi/faults.js';
import { type MirrorOptions, OptionError, givenOptions } from '../mirror/options.js';
import type { AnswerOf, ArgsOf, CommandName } from '../qapi/commands.js';
import { installErrorTransfer } from '../shared/error-transfer.js';
import { type SourceRef, describeSource } from '../shared/source-ref.js';
import { WorkerError } from '../shared/worker-error.js';
import type { EventSink, ImageEntry, ImportOptions, InterruptedJob, ProgressSink, ReleasedSink, StartMirrorRequest } from './api-types.js';
import { deleteCheckpoint, getCheckpoint, listCheckpoints, unresumable } from './checkpoint-store.js';
import { SimulatedGuest, type GuestStats } from './guest.js';
import { ImageStore } from './image-store.js';
import { Jobs } from './jobs.js';
import { type NbdExportInfo, checkExportUri, probeExport, withExports } from './nbd.js';

installErrorTransfer();

const images = new ImageStore();
const pickedFiles = new Map<string, File>();
const jobs = new Jobs(images, (name) => pickedFiles.get(name));
/** Where NBD exports are looked at (connectNbd); jobs open them through their own. */
const exports = withExports(images.files('an NBD export being looked at'));

const api = {
  /** The images, each with who holds it now (any tab). */
  async listImages(): Promise<ImageEntry[]> {
    const list = await images.list((name) => jobs.facts(name));
    const locks = await imageLocks().catch(() => new Map<string, never>());
    const running = await jobs.running();
    const interrupted = new Map((await listCheckpoints().catch(() => [])).filter((c) => !running.has(c.id)).map((c) => [c.target, c.id]));
    for (const image of list) {
      const state = locks.get(image.name);
      if (state) image.inUse = `in use by ${holderWords(state)}`;
      const job = jobs.holderOf(image.name);
      if (job) image.job = job;
      const stopped = interrupted.get(image.name);
      if (stopped !== undefined) image.interruptedJob = stopped;
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

  /** Throws the LockError a deletion would meet now (somebody holds the image); takes no lock. */
  async checkDeletable(name: string): Promise<void> {
    return images.checkRemovable(name);
  },

  /** Deletes an image; refused with the lock's message while anybody holds it. */
  async deleteImage(name: string): Promise<void> {
    return images.remove(name);
  },

  /**
   * An image's file for a download link: a snapshot taken under a shared
   * lock (refused while a job writes the image). The browser streams it
   * from disk; should the image change later, the download fails rather
   * than mix two versions.
   */
  async imageFile(name: string): Promise<File> {
    return images.file(name, 'a download');
  },

  /**
   * An image's bytes for a save picker, handed over (transferred) as a
   * stream: read under a shared lock held until the stream ends or is
   * cancelled, so no job starts writing the image while it is saved.
   */
  async imageStream(name: string): Promise<ReadableStream<Uint8Array>> {
    const stream = await images.stream(name, 'a download');
    return Comlink.transfer(stream, [stream]);
  },

  async sha256(name: string): Promise<string> {
    return images.sha256(name);
  },

  /** Whether two images show a guest the same bytes (a lesson's check that its target holds what its source holds). */
  async sameContent(a: string, b: string): Promise<boolean> {
    return images.sameContent(a, b);
  },

  /** Keeps a picked file so it can be a mirror source directly (until the page goes away). */
  addPickedFile(file: File): SourceRef {
    pickedFiles.set(file.name, file);
    return { kind: 'file', name: file.name };
  },

  pickedFileNames(): string[] {
    return [...pickedFiles.keys()];
  },

  /**
   * Copies a picked file's bytes into OPFS (the format comes along as it
   * is). An import completes by itself; on a read error it fails (report),
   * unless `options` say otherwise. Nothing comes from the mirror form.
   */
  async importFile(file: File, name: string, options: ImportOptions = {}): Promise<string> {
    pickedFiles.set(file.name, file);
    return jobs.launch({ kind: 'import', source: { kind: 'file', name: file.name, raw: true }, target: name, targetFormat: 'raw', options: importOptions(options, 'report') });
  },

  /**
   * Copies a URL's bytes into OPFS with Range requests; a failed request is
   * retried with backoff (ignore), unless `options` say otherwise.
   */
  async importUrl(url: string, name: string, options: ImportOptions = {}): Promise<string> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new FormatError(`"${url}" is not a URL`, 'url');
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new FormatError(`"${url}" is not an http(s) URL`, 'url');
    return jobs.launch({ kind: 'import', source: { kind: 'url', url: parsed.href, raw: true }, target: name, targetFormat: 'raw', options: importOptions(options, 'ignore') });
  },

  /**
   * Connects to an NBD export behind a WebSocket bridge (websockify in
   * front of qemu-nbd or nbdkit), says what it is (its size, whether it is
   * read-only) and lets go of it. Its `uri` (nbd+ws://HOST:PORT/EXPORT)
   * names it from then on: a mirror's source ({ kind: 'nbd', uri, format }),
   * an import's (importNbd), or a mirror's target (the target's name; it
   * must be the source's size). A failure says which step failed (a
   * WorkerError: nbd-unreachable, nbd-no-server, nbd-no-export...).
   */
  async connectNbd(wsUrl: string, exportName: string, format: 'raw' | 'qcow2' = 'raw'): Promise<NbdExportInfo> {
    if (format !== 'raw' && format !== 'qcow2') throw new FormatError(`Unknown format '${String(format)}' (expected raw or qcow2)`, 'format');
    return probeExport(exports, wsUrl, exportName, format);
  },

  /**
   * Copies an NBD export's bytes into OPFS, as they are. A failed request
   * is retried with backoff (ignore: a lost connection is made again),
   * unless `options` say otherwise. No checkpoint is kept: an import cut
   * off is started again (Retry), not resumed.
   */
  async importNbd(uri: string, name: string, options: ImportOptions = {}): Promise<string> {
    checkExportUri(uri);
    return jobs.launch({ kind: 'import', source: { kind: 'nbd', uri }, target: name, targetFormat: 'raw', options: importOptions(options, 'ignore') });
  },

  /**
   * Hears every job's events (QMP-shaped), progress snapshots (at most ~10
   * a second per job, each with the bitmap's picture in `pictureCells`
   * cells), and when a job that ended has let go of its images (they can
   * be deleted, and a failed job resumed, from then on). Refused in a
   * browser without an Origin Private File System.
   */
  subscribe(onEvent: EventSink, onProgress: ProgressSink, onReleased?: ReleasedSink, pictureCells = 0): void {
    if (!navigator.storage?.getDirectory) throw new WorkerError('no-opfs', 'this browser has no Origin Private File System');
    jobs.setPictureCells(pictureCells);
    jobs.listen(onEvent, onProgress, onReleased);
  },

  /** How many cells the picture in each progress has from now on (the page's canvas changed size). */
  setPictureCells(cells: number): void {
    jobs.setPictureCells(cells);
  },

  /** Starts a mirror; armed faults apply from its first request, an armed guest starts writing with it. */
  async startMirror(request: StartMirrorRequest): Promise<string> {
    // Checked before anything is opened: a bad rule or rate refuses the start.
    const faults = (request.faults ?? []).map((rule) => {
      try {
        return parseFaultSpec(rule);
      } catch (err) {
        throw new OptionError((err as Error).message);
      }
    });
    if (request.guest !== undefined && (!Number.isSafeInteger(request.guest) || request.guest <= 0)) {
      throw new OptionError(`guest write rate ${request.guest}: must be a positive number of bytes per second`);
    }
    const id = await jobs.launch({
      kind: 'mirror',
      source: request.source,
      target: request.target,
      ...(request.targetFormat ? { targetFormat: request.targetFormat } : {}),
      options: request.options,
      ...(faults.length ? { faults } : {}),
    });
    try {
      if (request.guest !== undefined) api.startGuestWrites(id, request.guest);
    } catch {
      // The job ended already: nothing to write to.
    }
    return id;
  },

  /** Runs one QMP-shaped command (job-pause, job-resume, block-job-cancel, fault-add...). */
  async execute<C extends CommandName>(command: C, args: ArgsOf<C>): Promise<AnswerOf<C>> {
    return (await jobs.control.execute(command, args)) as AnswerOf<C>;
  },

  startGuestWrites(id: string, bytesPerSecond: number): GuestStats {
    const entry = jobs.entry(id);
    entry.guest ??= new SimulatedGuest(entry.job, bytesPerSecond);
    entry.guest.setRate(bytesPerSecond);
    entry.guest.start();
    return entry.guest.state;
  },

  async stopGuestWrites(id: string): Promise<GuestStats | null> {
    const entry = jobs.entry(id);
    await entry.guest?.stop();
    return entry.guest?.state ?? null;
  },

  /** What job `id`'s last stored checkpoint calls clean (bytes), or null while it has none. */
  async checkpointClean(id: string): Promise<number | null> {
    const c = await getCheckpoint(id);
    return c ? c.size - c.dirtyBytes : null;
  },

  /** Jobs with a checkpoint but no live job (here or in another tab): a closed tab, a dead worker, a failure. */
  async listInterrupted(): Promise<InterruptedJob[]> {
    const stored = await listCheckpoints();
    const running = await jobs.running();
    return stored
      .filter((c) => !running.has(c.id))
      .map((c) => {
        const item: InterruptedJob = {
          id: c.id,
          kind: c.kind ?? 'mirror',
          source: describeSource(c.source),
          target: c.target,
          status: c.status,
          savedAt: c.savedAt,
          dirtyBytes: c.dirtyBytes,
          size: c.size,
        };
        const problem = unresumable(c);
        if (problem) item.problem = problem;
        else if (c.source.kind === 'file' && !pickedFiles.has(c.source.name)) item.pickFile = c.source.name;
        else if (c.kind === 'import' && c.source.kind === 'url') item.resumesItself = true;
        return item;
      });
  },

  /**
   * Resumes an interrupted job where its checkpoint says. Its source, if a
   * picked file this page no longer holds, is `file` (the same file: its
   * name, size and date are checked).
   */
  async resumeInterrupted(id: string, file?: File): Promise<string> {
    const checkpoint = await getCheckpoint(id);
    if (!checkpoint) throw new WorkerError('no-checkpoint', `no checkpoint for a job named "${id}"`);
    if ((await jobs.running()).has(id)) throw new WorkerError('job-running', `the job "${id}" is running`);
    const problem = unresumable(checkpoint);
    if (problem) throw new ImageConflictError(checkpoint.target, `the checkpoint of "${id}" was ${problem}`);
    if (file) {
      const wanted = checkpoint.source.kind === 'file' ? checkpoint.source.name : null;
      if (wanted === null) throw new WorkerError('wrong-file', `the job "${id}" does not read a picked file`);
      if (file.name !== wanted) throw new WorkerError('wrong-file', `the job "${id}" reads "${wanted}", not "${file.name}"`);
      pickedFiles.set(file.name, file);
    }
    return jobs.launch({
      kind: checkpoint.kind ?? 'mirror',
      source: checkpoint.source,
      target: checkpoint.target,
      targetFormat: checkpoint.targetFormat,
      options: givenOptions(checkpoint.options),
      resume: checkpoint,
    });
  },

  /**
   * Tries an ended job again: from its checkpoint when it kept one (a
   * failed job), else from the start, as it was started.
   */
  async retryJob(id: string): Promise<string> {
    if (await getCheckpoint(id)) return api.resumeInterrupted(id);
    const launch = jobs.endedLaunch(id);
    if (!launch) throw new WorkerError('no-such-job', `no ended job named "${id}" to try again`);
    const { id: _old, ...options } = launch.options;
    return jobs.launch({ ...launch, options });
  },

  async discardInterrupted(id: string): Promise<void> {
    if ((await jobs.running()).has(id)) throw new WorkerError('job-running', `the job "${id}" is running`);
    await deleteCheckpoint(id);
  },
};

/** An import's options: its own defaults, never the mirror form's. */
function importOptions(given: ImportOptions, onSourceError: 'report' | 'ignore'): MirrorOptions {
  return {
    sync: 'full',
    'on-source-error': given['on-source-error'] ?? onSourceError,
    'on-target-error': given['on-target-error'] ?? 'report',
    speed: given.speed ?? 0,
  };
}

export type WorkerApi = typeof api;

Comlink.expose(api);
