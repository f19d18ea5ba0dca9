/**
 * The page: its panels, wired together. Each panel owns its part of the
 * page (its elements and its error line) and talks to the worker through
 * bridge.ts; this module passes word from one to another, and holds the
 * few steps that span panels (a lesson's set-up and its resume). Every byte
 * of I/O happens in the worker; this thread renders what it reports (at
 * most ~10 progress updates a second per job, each with its picture).
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import type { JobRelease } from '../worker/api-types.js';
import { restartWorker, subscribe, worker } from './bridge.js';
import { clearErrorLines } from './dom.js';
import { EventLog } from './event-log.js';
import { FaultPanel } from './faults.js';
import { ImagesSection, imagesBytes } from './images.js';
import { InterruptedJobs } from './interrupted.js';
import { JobPanel } from './job-panel.js';
import { JobStore } from './job-store.js';
import { LessonsSection } from './lessons.js';
import { ChallengesSection } from './challenges.js';
import type { LessonSetup } from '../lessons/lesson.js';
import { MirrorForm } from './mirror-form.js';
import { explain } from './messages.js';
import { NbdSection } from './nbd.js';
import { metStorageLimit } from './job-ending.js';
import { readStorage } from './storage.js';

const log = new EventLog();
/** Every job the page knows, updated by the worker's events and progress: the panels read jobs from it. */
const jobs = new JobStore();
/** Images another tab held at the last look. */
let heldElsewhere = '';
const faults = new FaultPanel(
  () => jobs.running,
  (id, rules) => panel.stops.faultsNow(id, rules),
);
const panel = new JobPanel(jobs, {
  onPictureCells: (cells) => void worker().setPictureCells(cells),
  onDownload: (image) => images.download(image),
  onDelete: (image) => images.remove(image),
  onRetry: async (id) => {
    const started = await worker().retryJob(id);
    await images.refresh();
    await interrupted.refresh();
    return started;
  },
  stopHeld: (id) => lessons.owns(id),
});
const form = new MirrorForm({
  currentJob: () => jobs.current,
  onStarted: async (id, names) => {
    log.jobStarted(id, form.options());
    jobs.track(id, names);
    challenges.started(id, names.target);
    panel.focus();
    await images.refresh();
    await faults.refresh();
  },
  holder: (image) => images.list.find((i) => i.name === image)?.job,
  armed: () => faults.forStart(),
});
const images = new ImagesSection({
  onJobStarted: (id, names) => jobs.track(id, names),
  onMirror: (image) => form.useSource(image),
  onStorage: (facts) => jobs.storageNow(facts),
  onImagesChanged: (list) => {
    void form.setImages(list);
    // Another tab let go of images (closed, or its job ended): its interrupted jobs can be resumed from here.
    const elsewhere = list.filter((i) => i.inUse && !i.job).map((i) => i.name).join('\n');
    if (elsewhere !== heldElsewhere) {
      heldElsewhere = elsewhere;
      void interrupted.refresh();
    }
  },
});
// NBD exports: offered by the mirror form once connected; an import goes as the images section's others.
new NbdSection({
  onConnected: (info) => form.addExport(info),
  onForgotten: (uri) => form.removeExport(uri),
  useAsSource: (info) => form.useExportSource(info),
  useAsTarget: (info) => form.useExportTarget(info),
  importExport: (info) => images.importExport(info.uri, info.exportName),
});
const interrupted = new InterruptedJobs({
  onResumed: async (id, names, byPerson) => {
    jobs.track(id, names);
    if (names.kind === 'import') images.watchImport(id, names.target);
    if (byPerson) panel.focus();
    else images.say(`The import of ${names.target} resumed by itself where it stopped (${id}).`);
    await images.refresh();
  },
});

/** A lesson's or a challenge's start: a fresh demo image and target, the mirror form filled, the faults and the guest armed. */
async function setUpDemo(setup: LessonSetup, what: string): Promise<{ diskBytes: number }> {
  const { target } = setup;
  // A fresh run: an interrupted job onto the target and the target itself go (the worker refuses them while in use).
  for (const job of await worker().listInterrupted()) if (job.target === target) await worker().discardInterrupted(job.id);
  if ((await worker().listImages()).some((i) => i.name === target)) await worker().deleteImage(target);
  await worker().createDemoImage();
  await images.refresh();
  form.fill('demo.raw', target, setup.targetFormat ?? '', setup.options);
  await faults.arm(setup.faults, setup.guest);
  images.say(`Set up for the ${what}: a fresh demo.raw, the mirror form filled${setup.faults.length ? ', faults armed' : ''}${setup.guest ? ', a guest armed' : ''}.`);
  const demo = (await worker().listImages()).find((i) => i.name === 'demo.raw');
  if (!demo) throw new Error('the demo image was not made');
  return { diskBytes: demo.virtualSize };
}

/** Resolves once job `id` let go of its images (just after it is gone; 10 s at most). */
async function released(id: string): Promise<void> {
  for (let i = 0; i < 100 && (await worker().listImages()).some((image) => image.job?.id === id); i++) await new Promise((r) => setTimeout(r, 100));
}

const lessons = new LessonsSection({
  setUp: (lesson) => setUpDemo(lesson.setup, 'lesson'),
  start: () => form.start(),
  liftFaults: () => faults.liftAll(),
  guestOff: () => faults.guestOff(),
  interruptAndResume: async (id) => {
    await restartWorker();
    // The dead worker's locks go with it; then its checkpoint is the job's.
    for (let i = 0; i < 100 && !(await worker().listInterrupted()).some((j) => j.id === id); i++) await new Promise((r) => setTimeout(r, 50));
    const resumed = await worker().resumeInterrupted(id);
    jobs.track(resumed);
    await images.refresh();
    await interrupted.refresh();
  },
  handOver: (id) => panel.stops.release(id),
  released,
});
const challenges = new ChallengesSection({ setUp: (setup) => setUpDemo(setup, 'challenge'), released });

/** A job reached null or concluded: the fault panel lets go of it, and the lists look again. */
function onFinished(): void {
  faults.jobEnded();
  void images.refresh();
  void interrupted.refresh();
}

function onEvent(e: AnyQmpEvent): void {
  log.add(e);
  const job = jobs.onEvent(e);
  if (job && e.event === 'JOB_STATUS_CHANGE' && job.done) onFinished();
  lessons.onEvent(e);
  challenges.onEvent(e);
  if (e.event === 'BLOCK_JOB_COMPLETED') images.jobEnded(e.data.device, e.data.error ? 'failed' : 'completed', e.data.error);
  if (e.event === 'BLOCK_JOB_CANCELLED') images.jobEnded(e.data.device, 'cancelled');
  if (e.event === 'BLOCK_JOB_ERROR') void faults.refresh();
  // The target ran out of space: the dialog and the ending say what the browser's storage reports.
  if (e.event === 'BLOCK_JOB_ERROR' && metStorageLimit(e.data)) void readStorage(imagesBytes(images.list)).then((f) => f && jobs.storageNow(f), () => {});
}

/** A job that ended let go of its images: they are free in the list (an import's image is a source now), and a failed job can be resumed. */
function onReleased(release: JobRelease): void {
  jobs.released(release);
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

// An error line speaks of the last action: the next one (a button, a submitted form) clears them.
document.addEventListener('click', (e) => (e.target as Element | null)?.closest('button') && clearErrorLines(), true);
document.addEventListener('submit', clearErrorLines, true);

async function init(): Promise<void> {
  await subscribe(
    onEvent,
    (p) => {
      void jobs.onProgress(p);
      lessons.onProgress(p.info, p.cells);
      challenges.onProgress(p);
    },
    onReleased,
    () => panel.pictureCells,
  );
  await images.refresh();
  await interrupted.refresh();
  lessons.fromHash(true);
  void registerServiceWorker();
  document.body.dataset.ready = 'true';
}

void init().catch((err) => {
  images.say(`This browser cannot run diskmirror: ${explain(err)}`, 'error');
});
