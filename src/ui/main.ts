/**
 * The page: its panels, wired together. Each panel owns its part of the
 * page (its elements and its error line) and talks to the worker through
 * bridge.ts; this module only passes word from one to another. Every byte
 * of I/O happens in the worker; this thread renders what it reports (at
 * most ~10 progress updates a second per job, each with its picture).
 */
import type { AnyQmpEvent } from '../mirror/events.js';
import { errorText } from './dom.js';
import { subscribe, worker } from './bridge.js';
import { EventLog } from './event-log.js';
import { FaultPanel } from './faults.js';
import { ImagesSection } from './images.js';
import { InterruptedJobs } from './interrupted.js';
import { JobPanel } from './job-view.js';
import { MirrorForm } from './mirror-form.js';

const log = new EventLog();
const faults = new FaultPanel(() => panel.currentJob);
const panel = new JobPanel({
  onFinished: (id) => {
    faults.jobEnded(id);
    void images.refresh();
    void interrupted.refresh();
  },
  onPictureCells: (cells) => void worker().setPictureCells(cells),
});
const form = new MirrorForm({
  currentJob: () => panel.currentJob,
  onStarted: async (id, names) => {
    panel.track(id, names);
    await images.refresh();
    await faults.refresh();
  },
});
const images = new ImagesSection({
  onJobStarted: (id) => panel.track(id),
  importOptions: () => form.importOptions(),
  onImagesChanged: (list) => void form.setImages(list),
});
const interrupted = new InterruptedJobs({
  onResumed: async (id) => {
    panel.track(id);
    await images.refresh();
  },
});

function onEvent(e: AnyQmpEvent): void {
  log.add(e);
  panel.onEvent(e);
  if (e.event === 'BLOCK_JOB_COMPLETED') images.jobEnded(e.data.device, e.data.error ? 'failed' : 'completed', e.data.error);
  if (e.event === 'BLOCK_JOB_CANCELLED') images.jobEnded(e.data.device, 'cancelled');
  if (e.event === 'BLOCK_JOB_ERROR') void faults.refresh();
}

/** A job that ended let go of its images: they are free in the list, and a failed job can be resumed. */
function onReleased(): void {
  void images.refresh();
  void interrupted.refresh();
}

async function registerServiceWorker(): Promise<void> {
  if (!('serviceWorker' in navigator) || import.meta.env.DEV) return;
  try {
    await navigator.serviceWorker.register('./sw.js', { scope: './' });
  } catch {
    // Offline use needs it; the app works online without it.
  }
}

async function init(): Promise<void> {
  await subscribe(onEvent, (p) => panel.onProgress(p), onReleased, panel.pictureCells);
  await images.refresh();
  await interrupted.refresh();
  void registerServiceWorker();
  document.body.dataset.ready = 'true';
}

void init().catch((err) => {
  images.say(`This browser cannot run diskmirror: ${errorText(err)}`);
});
