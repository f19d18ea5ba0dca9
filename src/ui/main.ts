/**
 * The page: images in OPFS, the mirror form, the job with its picture and
 * errors, faults for teaching, and the event log. Every byte of I/O happens
 * in the worker; this thread renders what it reports (at most ~10 progress
 * updates a second per job).
 */
import type { FormatName } from '../format/image-format.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import type { ErrorPolicy } from '../mirror/error-policy.js';
import type { CopyMode, MirrorOptions, SyncMode } from '../mirror/options.js';
import { formatSize, parseSize } from '../util/size.js';
import type { ImageEntry, InterruptedJob, JobProgress, SourceRef } from '../worker/worker.js';
import { describeSource } from '../worker/source-ref.js';
import { byId, errorText, h } from './dom.js';
import { worker, Comlink } from './bridge.js';
import { ImagesSection } from './images.js';
import { JobPanel } from './job-view.js';
import { FaultPanel } from './faults.js';
import { EventLog } from './event-log.js';

const value = (id: string) => byId<HTMLInputElement | HTMLSelectElement>(id).value.trim();

/** Options from the form, QEMU's defaults where a field is empty. */
function formOptions(): MirrorOptions {
  const options: MirrorOptions = { sync: value('sync') as SyncMode };
  if (value('granularity')) options.granularity = parseSize(value('granularity'), 'Granularity');
  if (value('buf-size')) options['buf-size'] = parseSize(value('buf-size'), 'Buffer size');
  if (value('speed')) options.speed = parseSize(value('speed'), 'Speed limit');
  options['on-source-error'] = value('on-source-error') as ErrorPolicy;
  options['on-target-error'] = value('on-target-error') as ErrorPolicy;
  options['copy-mode'] = value('copy-mode') as CopyMode;
  return options;
}

const log = new EventLog();
const faults = new FaultPanel(() => panel.currentJob);
const panel = new JobPanel((id) => {
  faults.jobEnded(id);
  void images.refresh();
  void refreshInterrupted();
});
const images = new ImagesSection({
  onJobStarted: (id) => panel.track(id),
  importOptions: () => {
    const o = formOptions();
    return { speed: o.speed ?? 0, 'on-source-error': o['on-source-error'], 'on-target-error': o['on-target-error'] };
  },
  onImagesChanged: (list) => void renderSources(list),
});

async function renderSources(list: ImageEntry[]): Promise<void> {
  const select = byId<HTMLSelectElement>('source');
  const selected = select.value;
  const picked = await worker().pickedFileNames();
  const options = [
    ...list.map((img) => new Option(img.name, JSON.stringify({ kind: 'opfs', name: img.name } satisfies SourceRef))),
    ...picked.map((name) => new Option(`picked file: ${name}`, JSON.stringify({ kind: 'file', name } satisfies SourceRef))),
  ];
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === selected)) select.value = selected;
  byId('image-names').replaceChildren(...list.map((img) => new Option(img.name)));
}

byId<HTMLFormElement>('mirror-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const error = byId('form-error');
  error.textContent = '';
  try {
    if (!value('source')) throw new Error('Pick a source image (or make the demo image first).');
    const source = JSON.parse(value('source')) as SourceRef;
    const target = value('target');
    if (!target) throw new Error('Name a target image: an existing one, or a new name.');
    // The worker refuses a target that is the source or in its backing chain, before anything is written.
    const targetFormat = value('target-format') as FormatName | '';
    const id = await worker().startMirror({ source, target, options: formOptions(), ...(targetFormat ? { targetFormat } : {}) });
    panel.track(id);
    await images.refresh();
    await faults.refresh();
    error.textContent = '';
    byId('job-heading').textContent = `Job: ${describeSource(source)} → ${target}`;
  } catch (err) {
    error.textContent = errorText(err);
  }
});

// The speed limit applies live to the job shown.
byId('speed').addEventListener('change', async () => {
  const id = panel.currentJob;
  if (!id) return;
  try {
    const speed = value('speed') ? parseSize(value('speed'), 'Speed limit') : 0;
    await worker().execute('block-job-set-speed', { device: id, speed });
    byId('form-error').textContent = '';
  } catch (err) {
    // Not running any more, or a bad value: say so, the form keeps it for the next job.
    if (!/not found/.test(errorText(err))) byId('form-error').textContent = errorText(err);
  }
});

async function refreshInterrupted(): Promise<void> {
  let items: InterruptedJob[] = [];
  try {
    items = await worker().listInterrupted();
  } catch {
    return;
  }
  byId('interrupted-section').hidden = items.length === 0;
  byId('interrupted').replaceChildren(
    ...items.map((job) =>
      h(
        'li',
        {},
        h('strong', {}, job.id),
        `: ${job.source} → ${job.target}, ${job.status} when saved ${new Date(job.savedAt).toLocaleString()}; ${formatSize(job.dirtyBytes)} of ${formatSize(job.size)} left to copy. `,
        job.problem ? h('span', { class: 'error' }, job.problem, ' ') : '',
        h('button', { type: 'button', class: 'small', disabled: Boolean(job.problem), 'aria-label': `Resume interrupted job ${job.id}`, onclick: () => void resumeInterrupted(job.id) }, 'Resume'),
        ' ',
        h('button', { type: 'button', class: 'small danger', 'aria-label': `Discard interrupted job ${job.id}`, onclick: () => void discardInterrupted(job.id) }, 'Discard'),
      ),
    ),
  );
}

async function resumeInterrupted(id: string): Promise<void> {
  try {
    const started = await worker().resumeInterrupted(id);
    panel.track(started);
    await refreshInterrupted();
    await images.refresh();
  } catch (err) {
    byId('form-error').textContent = errorText(err);
  }
}

async function discardInterrupted(id: string): Promise<void> {
  await worker().discardInterrupted(id);
  await refreshInterrupted();
}

function onEvent(e: AnyQmpEvent): void {
  log.add(e);
  panel.onEvent(e);
  if (e.event === 'BLOCK_JOB_COMPLETED') images.jobEnded(e.data.device, e.data.error ? 'failed' : 'completed', e.data.error);
  if (e.event === 'BLOCK_JOB_CANCELLED') images.jobEnded(e.data.device, 'cancelled');
  if (e.event === 'BLOCK_JOB_ERROR') void faults.refresh();
}

function onProgress(p: JobProgress): void {
  panel.onProgress(p);
}

/** A job that ended let go of its images: they are free in the list, and a failed job can be resumed. */
function onReleased(): void {
  void images.refresh();
  void refreshInterrupted();
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
  if (!navigator.storage?.getDirectory) throw new Error('this browser has no Origin Private File System');
  await worker().subscribe(Comlink.proxy(onEvent), Comlink.proxy(onProgress), Comlink.proxy(onReleased));
  await images.refresh();
  await refreshInterrupted();
  void registerServiceWorker();
  document.body.dataset.ready = 'true';
}

void init().catch((err) => {
  byId('images-message').textContent = `This browser cannot run diskmirror: ${errorText(err)}`;
});
