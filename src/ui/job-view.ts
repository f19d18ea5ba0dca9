/**
 * The job panel: its heading, state and io-status, progress, throughput
 * and ETA, the verb buttons (each enabled only where the verb table allows
 * it), its error line, the bitmap picture (bitmap-view.ts), and the dialog
 * a stop opens. Nothing else on the page writes into it.
 */
import { type JobStatus, type JobVerb, verbAllowed } from '../mirror/job-states.js';
import type { AnyQmpEvent, EventData } from '../mirror/events.js';
import type { CellState } from '../mirror/types.js';
import { formatSize } from '../util/size.js';
import type { JobProgress } from '../worker/api-types.js';
import { BitmapView } from './bitmap-view.js';
import { byId, errorText, h } from './dom.js';
import { worker } from './bridge.js';

export interface JobPanelHooks {
  /** A job reached null or concluded. */
  onFinished(id: string): void;
  /** The picture has room for another number of cells now. */
  onPictureCells(cells: number): void;
}

interface JobView {
  id: string;
  status: JobStatus;
  ioStatus: string;
  paused: boolean;
  ready: boolean;
  last: JobProgress | null;
  /** Bytes per second, smoothed. */
  rate: number;
  lastSample: { t: number; bytes: number } | null;
  error: string | null;
  done: boolean;
  /** The last picture of its bitmap (kept once the job has none any more). */
  picture: CellState[];
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export class JobPanel {
  private readonly jobs = new Map<string, JobView>();
  private current: string | null = null;
  private readonly bitmap: BitmapView;
  private readonly dialog = byId<HTMLDialogElement>('stop-dialog');
  private dialogJob: string | null = null;

  constructor(private readonly hooks: JobPanelHooks) {
    this.bitmap = new BitmapView((cells) => hooks.onPictureCells(cells));
    for (const button of document.querySelectorAll<HTMLButtonElement>('#job-section [data-verb]')) {
      button.addEventListener('click', () => void this.verb(button.dataset.verb!));
    }
    byId<HTMLSelectElement>('job-select').addEventListener('change', (e) => this.select((e.target as HTMLSelectElement).value));
    byId('stop-resume').addEventListener('click', () => void this.dialogAction('resume'));
    byId('stop-cancel').addEventListener('click', () => void this.dialogAction('cancel'));
    // Escape (or Close) leaves the job paused: free some space or remove a fault, then Resume from the panel.
    this.dialog.addEventListener('cancel', () => (this.dialogJob = null));
    byId('stop-close').addEventListener('click', () => this.closeDialog());
  }

  get currentJob(): string | null {
    return this.current;
  }

  /** How many cells the bitmap picture has room for. */
  get pictureCells(): number {
    return this.bitmap.cells;
  }

  /**
   * A job the page started or resumed: it becomes the one shown. With
   * `names` (a mirror started from the form), the heading names its
   * source and target.
   */
  track(id: string, names?: { source: string; target: string }): void {
    if (!this.jobs.has(id)) {
      this.jobs.set(id, { id, status: 'created', ioStatus: 'ok', paused: false, ready: false, last: null, rate: 0, lastSample: null, error: null, done: false, picture: [] });
    } else {
      Object.assign(this.jobs.get(id)!, { done: false, error: null, lastSample: null, rate: 0 });
    }
    if (names) byId('job-heading').textContent = `Job: ${names.source} → ${names.target}`;
    this.select(id);
  }

  private select(id: string): void {
    this.current = id;
    this.sayError(this.jobs.get(id)?.error ?? '');
    this.renderPicker();
    this.render();
    this.bitmap.draw(this.jobs.get(id)?.picture ?? []);
  }

  private sayError(text: string): void {
    byId('job-error').textContent = text;
  }

  private renderPicker(): void {
    const select = byId<HTMLSelectElement>('job-select');
    select.replaceChildren(...[...this.jobs.keys()].map((id) => new Option(id, id, false, id === this.current)));
    byId('job-picker').hidden = this.jobs.size < 2;
  }

  onEvent(e: AnyQmpEvent): void {
    const id = e.event === 'JOB_STATUS_CHANGE' || e.event === 'BLOCK_JOB_PENDING' ? e.data.id : e.data.device;
    const view = this.jobs.get(id);
    if (!view) return;
    if (e.event === 'JOB_STATUS_CHANGE') {
      view.status = e.data.status;
      if (view.status === 'running' || view.status === 'ready') view.paused = false;
      if (view.status === 'paused' || view.status === 'standby') view.paused = true;
      if (view.status === 'ready') view.ready = true;
      if (view.status === 'null' || view.status === 'concluded') {
        view.done = true;
        if (this.dialogJob === id) this.closeDialog();
        this.hooks.onFinished(id);
      }
    } else if (e.event === 'BLOCK_JOB_ERROR') {
      if (e.data.action === 'stop') {
        view.paused = true;
        this.openDialog(id, e.data);
      }
    } else if (e.event === 'BLOCK_JOB_COMPLETED' && e.data.error) {
      view.error = `The job failed: ${e.data.error}.`;
    } else if (e.event === 'BLOCK_JOB_CANCELLED') {
      view.error = null;
    }
    if (id === this.current) {
      this.sayError(view.error ?? '');
      this.render();
    }
  }

  onProgress(p: JobProgress): void {
    const view = this.jobs.get(p.info.device);
    if (!view) return;
    view.last = p;
    if (p.cells.length > 0) view.picture = p.cells;
    view.status = p.info.status;
    view.ioStatus = p.info['io-status'];
    view.paused = p.info.paused;
    view.ready = p.info.ready;
    const now = performance.now();
    // Throughput from progress (bytes done), smoothed; the ETA divides what is left by it.
    if (view.lastSample && now - view.lastSample.t > 50 && p.info.offset >= view.lastSample.bytes) {
      const instant = (p.info.offset - view.lastSample.bytes) / ((now - view.lastSample.t) / 1000);
      view.rate = view.rate === 0 ? instant : view.rate * 0.7 + instant * 0.3;
    }
    if (!view.lastSample || now - view.lastSample.t > 50 || p.info.offset < view.lastSample.bytes) view.lastSample = { t: now, bytes: p.info.offset };
    if (p.info.device === this.current) {
      this.render();
      this.bitmap.draw(p.cells);
    }
  }

  private render(): void {
    const state = byId('job-state');
    const view = this.current ? this.jobs.get(this.current) : undefined;
    const buttons = document.querySelectorAll<HTMLButtonElement>('#job-section [data-verb]');
    if (!view) {
      state.textContent = 'No job yet';
      for (const b of buttons) b.disabled = true;
      return;
    }
    const p = view.last;
    const where = p ? `: ${p.source} → ${p.target}` : '';
    state.textContent = `Job ${view.id}${where} — ${view.status} (io-status ${view.ioStatus})`;
    const can = (verb: JobVerb) => !view.done && verbAllowed(verb, view.status);
    const enabled: Record<string, boolean> = {
      pause: can('pause') && !view.paused,
      resume: can('resume') && view.paused,
      complete: can('complete'),
      cancel: can('cancel') && !view.paused,
      'force-cancel': can('cancel'),
    };
    for (const b of buttons) b.disabled = !enabled[b.dataset.verb!];

    const bar = byId('progress');
    const offset = p?.info.offset ?? 0;
    const len = p?.info.len ?? 0;
    const percent = len > 0 ? Math.floor((offset / len) * 100) : view.ready || view.done ? 100 : 0;
    bar.setAttribute('aria-valuenow', String(percent));
    bar.setAttribute('aria-valuetext', `${percent}% (${formatSize(offset)} of ${formatSize(len)})`);
    (bar.firstElementChild as HTMLElement).style.width = `${percent}%`;
    bar.classList.toggle('stopped', view.paused);
    const rows: [string, string][] = [
      ['Copied', `${formatSize(offset)} of ${formatSize(len)}`],
      ['Dirty', p ? formatSize(p.stats.dirtyBytes) : '–'],
      ['In flight', p ? `${p.stats.inFlightOps} ops, ${formatSize(p.stats.inFlightBytes)}` : '–'],
      ['Throughput', view.paused || view.done ? '–' : `${formatSize(Math.max(0, view.rate))}/s`],
      ['ETA', view.done || view.paused ? '–' : view.ready ? 'ready: Complete to finish' : view.rate > 0 ? formatDuration((len - offset) / view.rate) : '–'],
      ['io-status', view.ioStatus],
      ['Speed limit', p && p.info.speed > 0 ? `${formatSize(p.info.speed)}/s` : 'none'],
    ];
    if (p?.guest?.running) rows.push(['Guest', `${p.guest.writes} writes, ${formatSize(p.guest.bytesWritten)}`]);
    byId('job-stats').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  private async verb(verb: string): Promise<void> {
    const id = this.current;
    if (!id) return;
    this.sayError('');
    try {
      if (verb === 'pause') await worker().execute('job-pause', { id });
      else if (verb === 'resume') await worker().execute('job-resume', { id });
      else if (verb === 'complete') await worker().execute('job-complete', { id });
      else if (verb === 'cancel') await worker().execute('block-job-cancel', { device: id, force: false });
      else if (verb === 'force-cancel') await worker().execute('block-job-cancel', { device: id, force: true });
    } catch (err) {
      this.sayError(errorText(err));
    }
  }

  private openDialog(id: string, error: EventData['BLOCK_JOB_ERROR']): void {
    const side = error.operation === 'read' ? 'source' : 'target';
    const range = error.bytes > 0 ? `bytes ${error.offset}–${error.offset + error.bytes - 1} (${formatSize(error.bytes)} at ${formatSize(error.offset)})` : 'a flush';
    byId('stop-title').textContent = `Job ${id} stopped: ${side} ${error.operation} error`;
    byId('stop-text').textContent =
      `The ${side} ${error.operation === 'read' ? 'read' : 'write'} of ${range} failed with ${error.errno}. ` +
      `The on-${side}-error policy paused the job; the range stays dirty and is retried on Resume. Close keeps the job paused (to remove a fault or free space first). (${error.message})`;
    this.dialogJob = id;
    if (!this.dialog.open) this.dialog.showModal();
  }

  private closeDialog(): void {
    this.dialogJob = null;
    if (this.dialog.open) this.dialog.close();
  }

  private async dialogAction(action: 'resume' | 'cancel'): Promise<void> {
    const id = this.dialogJob;
    this.closeDialog();
    if (!id) return;
    try {
      if (action === 'resume') await worker().execute('job-resume', { id });
      else await worker().execute('job-cancel', { id });
    } catch (err) {
      this.sayError(errorText(err));
    }
  }
}
