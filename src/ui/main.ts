/**
 * The page: images in OPFS, a mirror form, the job's state, progress and
 * events. Everything that touches bytes runs in the worker; this thread only
 * renders what the worker reports.
 */
import { type JobStatus, type JobVerb, verbAllowed } from '../mirror/job-states.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import type { JobProgress } from '../worker/worker.js';
import type { ImageEntry } from '../worker/image-store.js';
import { formatSize, parseSize } from '../util/size.js';
import { worker, Comlink } from './bridge.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const els = {
  newDemo: $<HTMLButtonElement>('new-demo'),
  imagesMessage: $('images-message'),
  imagesBody: $<HTMLTableElement>('images').tBodies[0]!,
  form: $<HTMLFormElement>('mirror-form'),
  source: $<HTMLSelectElement>('source'),
  target: $<HTMLInputElement>('target'),
  speed: $<HTMLInputElement>('speed'),
  names: $<HTMLDataListElement>('image-names'),
  formError: $('form-error'),
  state: $('job-state'),
  progress: $('progress'),
  progressText: $('progress-text'),
  events: $<HTMLOListElement>('events'),
  buttons: {
    pause: $<HTMLButtonElement>('pause'),
    resume: $<HTMLButtonElement>('resume'),
    complete: $<HTMLButtonElement>('complete'),
    cancel: $<HTMLButtonElement>('cancel'),
  },
};

let currentJob: string | null = null;
let currentStatus: JobStatus | null = null;
let currentIoStatus = 'ok';
let userPaused = false;

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function refreshImages(): Promise<ImageEntry[]> {
  const images = await worker().listImages();
  els.imagesBody.replaceChildren(
    ...images.map((img) => {
      const tr = document.createElement('tr');
      for (const text of [img.name, img.format, formatSize(img.virtualSize), formatSize(img.fileSize), img.backingFile ?? '']) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      if (img.note) tr.title = img.note;
      return tr;
    }),
  );
  const selected = els.source.value;
  els.source.replaceChildren(...images.map((img) => new Option(img.name, img.name)));
  if (images.some((i) => i.name === selected)) els.source.value = selected;
  els.names.replaceChildren(...images.map((img) => new Option(img.name)));
  return images;
}

function renderButtons(): void {
  const can = (verb: JobVerb) => currentJob !== null && currentStatus !== null && verbAllowed(verb, currentStatus);
  els.buttons.pause.disabled = !can('pause') || userPaused;
  els.buttons.resume.disabled = !can('resume') || !userPaused;
  els.buttons.complete.disabled = !can('complete');
  els.buttons.cancel.disabled = !can('cancel');
}

function renderState(): void {
  if (!currentJob || !currentStatus) {
    els.state.textContent = 'No job yet';
  } else {
    els.state.textContent = `Job ${currentJob}: ${currentStatus} (io-status ${currentIoStatus})`;
  }
  renderButtons();
}

function renderProgress(p: JobProgress): void {
  if (p.info.device !== currentJob) return;
  const { offset, len } = p.info;
  const done = len === 0 ? (p.info.ready || p.info.status === 'concluded' ? 100 : 0) : Math.floor((offset / len) * 100);
  els.progress.setAttribute('aria-valuenow', String(done));
  els.progress.setAttribute('aria-valuetext', `${done}% (${formatSize(offset)} of ${formatSize(len)})`);
  (els.progress.firstElementChild as HTMLElement).style.width = `${done}%`;
  els.progressText.textContent = `${formatSize(offset)} of ${formatSize(len)} copied; ${formatSize(p.stats.dirtyBytes)} dirty`;
  currentIoStatus = p.info['io-status'];
  userPaused = p.info.paused;
  currentStatus = p.info.status;
  renderState();
}

function onEvent(e: AnyQmpEvent): void {
  const li = document.createElement('li');
  li.textContent = JSON.stringify(e);
  if (e.event === 'BLOCK_JOB_ERROR' || (e.event === 'BLOCK_JOB_COMPLETED' && e.data.error)) li.className = 'error';
  els.events.append(li);
  li.scrollIntoView({ block: 'nearest' });
  if (e.event === 'JOB_STATUS_CHANGE' && e.data.id === currentJob) {
    currentStatus = e.data.status;
    if (e.data.status === 'running' || e.data.status === 'ready') userPaused = false;
    if (e.data.status === 'null' || e.data.status === 'concluded') void refreshImages();
    renderState();
  }
  if (e.event === 'BLOCK_JOB_ERROR' && e.data.action === 'stop') userPaused = true;
}

async function command(cmd: string): Promise<void> {
  if (!currentJob) return;
  els.formError.textContent = '';
  try {
    if (cmd === 'pause') {
      await worker().execute('job-pause', { id: currentJob });
      userPaused = true;
    } else if (cmd === 'resume') {
      await worker().execute('job-resume', { id: currentJob });
      userPaused = false;
    } else if (cmd === 'complete') {
      await worker().execute('job-complete', { id: currentJob });
    } else if (cmd === 'cancel') {
      await worker().execute('block-job-cancel', { device: currentJob, force: false });
    }
  } catch (err) {
    els.formError.textContent = errorText(err);
  }
  renderState();
}

els.newDemo.addEventListener('click', async () => {
  els.newDemo.disabled = true;
  els.imagesMessage.textContent = 'Creating the demo image…';
  try {
    const entry = await worker().createDemoImage();
    els.imagesMessage.textContent = `Created ${entry.name} (${formatSize(entry.virtualSize)}).`;
    await refreshImages();
    els.source.value = entry.name;
    if (!els.target.value) els.target.value = 'demo-copy.raw';
  } catch (err) {
    els.imagesMessage.textContent = `Could not create the demo image: ${errorText(err)}`;
  } finally {
    els.newDemo.disabled = false;
  }
});

els.form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  els.formError.textContent = '';
  const source = els.source.value;
  const target = els.target.value.trim();
  if (!source) {
    els.formError.textContent = 'Pick a source image (or create the demo image first).';
    return;
  }
  if (!target) {
    els.formError.textContent = 'Name a target image.';
    return;
  }
  let speed = 0;
  try {
    speed = els.speed.value.trim() ? parseSize(els.speed.value, 'Speed limit') : 0;
  } catch (err) {
    els.formError.textContent = errorText(err);
    return;
  }
  try {
    currentJob = null;
    const id = await worker().startMirror({ source, target, options: { sync: 'full', speed } });
    currentJob = id;
    currentStatus = 'running';
    renderState();
    await refreshImages();
  } catch (err) {
    els.formError.textContent = errorText(err);
  }
});

for (const [name, button] of Object.entries(els.buttons)) {
  button.addEventListener('click', () => void command(name));
}

async function init(): Promise<void> {
  await worker().subscribe(Comlink.proxy(onEvent), Comlink.proxy(renderProgress));
  await refreshImages();
  renderState();
}

void init().catch((err) => {
  els.imagesMessage.textContent = `This browser cannot run diskmirror: ${errorText(err)}`;
});
