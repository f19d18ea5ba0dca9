/**
 * The mirror worker: owns the images in OPFS and the jobs, and exposes them
 * to the page with comlink. Sync access handles only exist in dedicated
 * workers, so every byte of I/O happens here, never on the page's thread.
 */
import * as Comlink from 'comlink';
import { FaultRules } from '../block/fault.js';
import { FaultImage } from '../format/fault-image.js';
import type { FormatName, ImageFormat } from '../format/image-format.js';
import { MirrorControl } from '../mirror/control.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import { type BlockJobInfo, type CellState, type JobStats, MirrorJob } from '../mirror/mirror-job.js';
import type { MirrorOptions } from '../mirror/options.js';
import { installErrorTransfer } from './error-transfer.js';
import { type ImageEntry, ImageStore } from './image-store.js';

installErrorTransfer();

export interface StartMirrorRequest {
  source: string;
  target: string;
  /** Format of a target the job creates; default: the source's. */
  targetFormat?: FormatName;
  options: MirrorOptions;
}

export interface JobProgress {
  info: BlockJobInfo;
  stats: JobStats;
}

type EventSink = (event: AnyQmpEvent) => void;
type ProgressSink = (progress: JobProgress) => void;

const store = new ImageStore();
const control = new MirrorControl();
const eventSinks = new Set<EventSink>();
const progressSinks = new Set<ProgressSink>();
let nextJob = 0;

async function closeQuietly(image: ImageFormat | undefined): Promise<void> {
  await image?.close().catch(() => {});
}

const api = {
  async listImages(): Promise<ImageEntry[]> {
    return store.list();
  },

  async createDemoImage(name?: string): Promise<ImageEntry> {
    return store.createDemo(name);
  },

  async deleteImage(name: string): Promise<void> {
    return store.remove(name);
  },

  async sha256(name: string): Promise<string> {
    return store.sha256(name);
  },

  /** Hears every job's events (QMP-shaped) and progress snapshots (at most ~10 a second). */
  subscribe(onEvent: EventSink, onProgress: ProgressSink): void {
    eventSinks.add(onEvent);
    progressSinks.add(onProgress);
  },

  async startMirror(request: StartMirrorRequest): Promise<string> {
    const id = request.options.id ?? `mirror${nextJob++}`;
    let source: ImageFormat | undefined;
    let target: ImageFormat | undefined;
    try {
      source = await store.open(request.source);
      const targetCreated = !(await store.exists(request.target));
      target = targetCreated
        ? await store.create(request.target, request.targetFormat ?? source.format, source.size)
        : await store.open(request.target);
      const faults = { source: new FaultRules(), target: new FaultRules() };
      const job = await MirrorJob.create({
        source: new FaultImage(source, faults.source),
        target: new FaultImage(target, faults.target),
        options: { ...request.options, id },
        targetCreated,
      });
      control.add(job, faults);
      job.on((event) => {
        for (const sink of eventSinks) sink(event);
      }, { replay: true });
      const report = (info: BlockJobInfo) => {
        const progress = { info, stats: job.stats() };
        for (const sink of progressSinks) sink(progress);
      };
      job.onProgress(report);
      const opened = [source, target];
      void job.result.finally(() => Promise.all(opened.map(closeQuietly)));
      job.start();
      return id;
    } catch (err) {
      await closeQuietly(source);
      await closeQuietly(target);
      throw err;
    }
  },

  /** Runs one QMP-shaped command (job-pause, job-resume, block-job-cancel, fault-add...). */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    return control.execute(command, args);
  },

  /** The bitmap picture for a job, `cells` cells wide. */
  picture(id: string, cells: number): CellState[] {
    return control.get(id)?.picture(cells) ?? [];
  },
};

export type WorkerApi = typeof api;

Comlink.expose(api);
