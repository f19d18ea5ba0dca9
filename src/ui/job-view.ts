/**
 * The job panel: its heading, state in words (QMP's status and io-status
 * as small text), progress, throughput and ETA, the verb buttons (each
 * enabled only where the verb table allows it), its error line, how the
 * job ended with what to do next (job-ending.ts), the bitmap picture
 * (bitmap-view.ts), and the dialog a stop opens. Nothing else on the page
 * writes into it. After an action that disables its own button, focus
 * moves to the next control that makes sense, never to the page's body.
 */
import { type JobStatus, type JobVerb, verbAllowed } from '../qapi/job-states.js';
import type { AnyQmpEvent, EventData } from '../qapi/events.js';
import { parseFaultSpec } from '../qapi/faults.js';
import type { CellState } from '../mirror/types.js';
import { formatSize } from '../util/size.js';
import type { JobKind, JobProgress, JobRelease } from '../worker/api-types.js';
import { BitmapView } from './bitmap-view.js';
import { byId, h } from './dom.js';
import { worker } from './bridge.js';
import { type EndAction, type Ending, describeEnding } from './job-ending.js';
import { explain } from './messages.js';
import { TimelineData, drawTimeline } from './timeline.js';

/** Progress is painted at most this often (it comes about ten times a second). */
const PROGRESS_PAINT_MS = 250;

export interface JobPanelHooks {
  /** A job reached null or concluded. */
  onFinished(id: string): void;
  /** The picture has room for another number of cells now. */
  onPictureCells(cells: number): void;
  /** An ending's actions. */
  onDownload(image: string): Promise<void>;
  onDelete(image: string): Promise<void>;
  /** Tries an ended job again; the new job's id. */
  onRetry(id: string): Promise<string>;
}

/** What the page knows of a job before its first progress. */
export interface JobNames {
  kind: JobKind;
  source: string;
  target: string;
}

interface JobView {
  id: string;
  names: JobNames | null;
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
  /** The last BLOCK_JOB_ERROR: where and how it failed. */
  lastError: EventData['BLOCK_JOB_ERROR'] | null;
  /** How it ended: from its last event, then from its release. */
  ending: Ending | null;
  completedError: string | undefined;
  /** What it had copied when it ended. */
  endOffset: number;
  timeline: TimelineData;
  /** When errors the job ignored came (ms, Date.now()), the last few. */
  ignoredAt: number[];
  release: JobRelease | null;
  /** A cancel was accepted: QEMU refuses a complete from then on (a soft cancel after READY finishes without switching over). */
  cancelled: boolean;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** The state line's words for a job that has not ended. */
function stateWords(view: JobView): string {
  const importing = view.names?.kind === 'import';
  switch (view.status) {
    case 'created':
      return 'Starting';
    case 'running':
      return view.ready ? 'In sync, copying new writes' : importing ? 'Importing' : 'Copying';
    case 'ready':
      return importing ? 'Copied, finishing' : 'In sync: Complete to finish';
    case 'paused':
    case 'standby':
      return view.ioStatus === 'nospace' ? 'Paused: out of space' : view.ioStatus === 'failed' ? 'Paused on an error' : 'Paused';
    case 'waiting':
    case 'pending':
      return 'Finishing';
    case 'aborting':
      return 'Stopping';
    default:
      return 'Ended';
  }
}

const ACTION_LABELS: Record<EndAction, string> = { download: 'Download', delete: 'Delete', retry: 'Retry' };

export class JobPanel {
  private readonly jobs = new Map<string, JobView>();
  private current: string | null = null;
  private readonly bitmap: BitmapView;
  private readonly dialog = byId<HTMLDialogElement>('stop-dialog');
  private dialogJob: string | null = null;
  /** A verb button was pressed: once it is disabled, focus goes to the next sensible control. */
  private keepFocus = false;
  /** A drawing of progress is asked for. */
  private frame = 0;
  private lastPaint = 0;

  constructor(private readonly hooks: JobPanelHooks) {
    this.bitmap = new BitmapView((cells) => hooks.onPictureCells(cells));
    for (const button of this.verbButtons()) {
      button.addEventListener('click', () => {
        this.keepFocus = true;
        void this.verb(button.dataset.verb!);
      });
    }
    byId<HTMLSelectElement>('job-select').addEventListener('change', (e) => this.select((e.target as HTMLSelectElement).value));
    byId('stop-resume').addEventListener('click', () => void this.dialogAction('resume'));
    byId('stop-cancel').addEventListener('click', () => void this.dialogAction('cancel'));
    // Escape (or Close) leaves the job paused: free some space or remove a fault, then Resume from the panel.
    this.dialog.addEventListener('cancel', () => (this.dialogJob = null));
    byId('stop-close').addEventListener('click', () => this.closeDialog());
    // A person who moves on elsewhere keeps their focus.
    document.addEventListener('focusin', (e) => {
      if (!byId('job-section').contains(e.target as Node)) this.keepFocus = false;
    });
  }

  get currentJob(): string | null {
    return this.current;
  }

  /** The job shown, if it has not ended. */
  get runningJob(): string | null {
    const view = this.current ? this.jobs.get(this.current) : undefined;
    return view && !view.done ? view.id : null;
  }

  /** How many cells the bitmap picture has room for. */
  get pictureCells(): number {
    return this.bitmap.cells;
  }

  private verbButtons(): HTMLButtonElement[] {
    return [...document.querySelectorAll<HTMLButtonElement>('#job-section [data-verb]')];
  }

  /**
   * A job the page started or resumed: it becomes the one shown. With
   * `names`, the heading names it before its first progress.
   */
  track(id: string, names?: JobNames): void {
    const view = this.jobs.get(id);
    if (!view) {
      this.jobs.set(id, {
        id,
        names: names ?? null,
        status: 'created',
        ioStatus: 'ok',
        paused: false,
        ready: false,
        last: null,
        rate: 0,
        lastSample: null,
        error: null,
        done: false,
        picture: [],
        lastError: null,
        ending: null,
        completedError: undefined,
        endOffset: 0,
        timeline: new TimelineData(),
        ignoredAt: [],
        release: null,
        cancelled: false,
      });
    } else {
      Object.assign(view, { done: false, error: null, lastSample: null, rate: 0, ending: null, release: null, lastError: null, ignoredAt: [], cancelled: false });
      if (names) view.names = names;
      view.timeline.mark('resume', 'started again');
    }
    this.select(id);
  }

  /** Moves focus to the job panel (after Start, Resume or Retry). */
  focus(): void {
    byId('job-section').focus();
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

  private title(view: JobView): string {
    const n = view.names;
    if (!n) return view.id;
    return n.kind === 'import' ? `${view.id}: import of ${n.source} as ${n.target}` : `${view.id}: ${n.source} → ${n.target}`;
  }

  private renderPicker(): void {
    const select = byId<HTMLSelectElement>('job-select');
    select.replaceChildren(...[...this.jobs.values()].map((view) => new Option(this.title(view), view.id, false, view.id === this.current)));
    byId('job-picker').hidden = this.jobs.size < 2;
  }

  onEvent(e: AnyQmpEvent): void {
    const id = e.event === 'JOB_STATUS_CHANGE' || e.event === 'BLOCK_JOB_PENDING' ? e.data.id : e.data.device;
    const view = this.jobs.get(id);
    if (!view) return;
    this.markTimeline(view, e);
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
      view.lastError = e.data;
      if (e.data.action === 'stop') {
        view.paused = true;
        this.openDialog(id, e.data);
      }
    } else if (e.event === 'BLOCK_JOB_COMPLETED') {
      view.completedError = e.data.error;
      this.end(view, e.data.error ? 'failed' : 'completed', e.data.offset);
    } else if (e.event === 'BLOCK_JOB_CANCELLED') {
      this.end(view, 'cancelled', e.data.offset);
    }
    if (id === this.current) this.render();
  }

  private markTimeline(view: JobView, e: AnyQmpEvent): void {
    const t = view.timeline;
    if (e.event === 'JOB_STATUS_CHANGE') {
      const s = e.data.status;
      if (s === 'paused' || s === 'standby') t.mark('pause', s === 'standby' ? 'paused while ready (standby)' : 'paused');
      else if ((s === 'running' || s === 'ready') && (view.status === 'paused' || view.status === 'standby')) t.mark('resume', 'resumed');
    } else if (e.event === 'BLOCK_JOB_ERROR') {
      t.mark('error', `${e.data.operation} error at ${formatSize(e.data.offset)} (${e.data.action})`);
      if (e.data.action === 'ignore') {
        view.ignoredAt.push(Date.now());
        if (view.ignoredAt.length > 20) view.ignoredAt.shift();
      }
    } else if (e.event === 'BLOCK_JOB_READY') t.mark('ready', 'READY');
    else if (e.event === 'BLOCK_JOB_COMPLETED') t.mark('end', e.data.error ? 'failed' : 'completed');
    else if (e.event === 'BLOCK_JOB_CANCELLED') t.mark('end', 'cancelled');
  }

  /** The job keeps meeting an error it ignores: it cannot converge while that lasts. */
  private stuck(view: JobView): number {
    const recent = view.ignoredAt.filter((at) => Date.now() - at < 10_000).length;
    return !view.done && !view.paused && !view.ready && recent >= 3 ? view.ignoredAt.length : 0;
  }

  /** The job let go of its images: the ending names the target as it is now. */
  released(release: JobRelease): void {
    const view = this.jobs.get(release.id);
    if (!view) return;
    view.release = release;
    if (view.ending) this.end(view, release.outcome, view.endOffset);
    if (release.id === this.current) this.render();
  }

  private end(view: JobView, outcome: JobRelease['outcome'], offset: number): void {
    view.endOffset = offset;
    view.ending = describeEnding({
      kind: view.names?.kind ?? view.last?.kind ?? 'mirror',
      outcome,
      target: view.names?.target ?? view.last?.target ?? '',
      ...(view.completedError !== undefined ? { error: view.completedError } : {}),
      ...(view.lastError ? { lastError: view.lastError } : {}),
      offset,
      ...(view.release ? { release: view.release } : {}),
    });
  }

  onProgress(p: JobProgress): void {
    const view = this.jobs.get(p.info.device);
    if (!view) return;
    view.last = p;
    if (!view.names) {
      // Known from the first progress of a job the page did not start: the picker names it from now on.
      view.names = { kind: p.kind, source: p.source, target: p.target };
      this.renderPicker();
    }
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
    if (!view.done) view.timeline.add(view.paused ? 0 : view.rate, p.stats.dirtyBytes);
    if (p.info.device === this.current) this.renderSoon();
  }

  /**
   * Progress is drawn at most every PROGRESS_PAINT_MS (in a frame), however
   * often it comes: the numbers stay readable, the bar glides between two
   * drawings, and the page's main thread stays free for the person.
   */
  private renderSoon(): void {
    if (this.frame) return;
    const wait = Math.max(0, this.lastPaint + PROGRESS_PAINT_MS - performance.now());
    this.frame = window.setTimeout(() => {
      requestAnimationFrame(() => {
        this.frame = 0;
        this.lastPaint = performance.now();
        const view = this.current ? this.jobs.get(this.current) : undefined;
        this.render();
        if (view) this.bitmap.draw(view.picture);
      });
    }, wait);
  }

  private render(): void {
    const view = this.current ? this.jobs.get(this.current) : undefined;
    const buttons = this.verbButtons();
    if (!view) {
      byId('job-state').textContent = 'No job yet';
      for (const b of buttons) b.disabled = true;
      return;
    }
    const title = `Job ${this.title(view)}`;
    if (byId('job-heading').textContent !== title) byId('job-heading').textContent = title;
    const ending = view.done || view.ending ? view.ending : null;
    const words = ending?.word ?? stateWords(view);
    const qmp = `— ${view.status} (io-status ${view.ioStatus})`;
    const state = byId('job-state');
    // Changed only when it says something new: it is a live region.
    if (state.textContent !== `${words} ${qmp}`) state.replaceChildren(h('span', {}, words), ' ', h('small', { class: 'qmp' }, qmp));
    this.renderEnding(view);
    const can = (verb: JobVerb) => !view.done && verbAllowed(verb, view.status);
    const enabled: Record<string, boolean> = {
      pause: can('pause') && !view.paused,
      resume: can('resume') && view.paused,
      complete: can('complete') && !view.cancelled,
      // QMP refuses a soft cancel of a paused job; the panel's Cancel then cancels as job-cancel does (as the stop dialog's).
      cancel: can('cancel'),
      'force-cancel': can('cancel'),
    };
    for (const b of buttons) b.disabled = !enabled[b.dataset.verb!];
    const cancel = buttons.find((b) => b.dataset.verb === 'cancel');
    cancel?.setAttribute('title', view.paused ? 'Paused: cancels at once, as QMP job-cancel (a soft cancel of a paused job is refused)' : 'Before READY: stops, leaving the target as it is. In sync: finishes the copy without switching over');
    this.rescueFocus(view);

    const bar = byId('progress');
    const p = view.last;
    const offset = p?.info.offset ?? 0;
    const len = p?.info.len ?? 0;
    const percent = len > 0 ? Math.floor((offset / len) * 100) : view.ready || ending?.tone === 'done' ? 100 : 0;
    const valueText = `${percent}% (${formatSize(offset)} of ${formatSize(len)})${ending ? `: ${ending.word.toLowerCase()}` : ''}`;
    if (bar.getAttribute('aria-valuetext') !== valueText) {
      bar.setAttribute('aria-valuenow', String(percent));
      bar.setAttribute('aria-valuetext', valueText);
    }
    // A transform, not a width: the bar moves on the compositor, with no layout of the page.
    (bar.firstElementChild as HTMLElement).style.transform = `scaleX(${percent / 100})`;
    bar.classList.toggle('stopped', view.paused && !ending);
    bar.classList.toggle('failed', ending?.tone === 'failed');
    bar.classList.toggle('cancelled', ending?.tone === 'cancelled');
    const stuck = this.stuck(view);
    const rows: [string, string][] = [
      ['Copied', `${formatSize(offset)} of ${formatSize(len)}`],
      ['Dirty', p ? formatSize(p.stats.dirtyBytes) : '–'],
      ['In flight', p ? `${p.stats.inFlightOps} ops, ${formatSize(p.stats.inFlightBytes)}` : '–'],
      ['Throughput', view.paused || view.done || !p || stuck ? '–' : `${formatSize(Math.max(0, view.rate))}/s`],
      [
        'ETA',
        stuck
          ? 'none while the error lasts'
          : view.done || view.paused
            ? '–'
            : view.ready
              ? view.names?.kind === 'import'
                ? 'finishing'
                : 'ready: Complete to finish'
              : view.rate > 0
                ? formatDuration((len - offset) / view.rate)
                : '–',
      ],
      ['io-status', view.ioStatus],
      // Known from the job's first progress (until then the form's limit may not have reached it).
      ['Speed limit', !p ? '–' : p.info.speed > 0 ? `${formatSize(p.info.speed)}/s` : 'none'],
    ];
    if (p?.guest?.running) rows.push(['Guest', `${p.guest.writes} writes, ${formatSize(p.guest.bytesWritten)}`]);
    setPairs(byId('job-stats'), rows);
    const notes: string[] = [];
    if (stuck) {
      notes.push(
        `This job cannot converge while the error lasts: under ignore the failed range stays dirty and is retried (${stuck} errors so far). Remove the fault (or fix the disk) and it catches up.`,
      );
    }
    const disk = p ? p.stats.nbChunks * p.stats.granularity : 0;
    if (p && disk > 0 && len > disk) {
      notes.push(`len (${formatSize(len)}) is past the disk's size (${formatSize(disk)}): every write to a chunk already copied adds its bytes to the work again, as QEMU's progress counts them.`);
    }
    const note = notes.join(' ');
    if (byId('job-note').textContent !== note) byId('job-note').textContent = note;
    drawTimeline(view.timeline);
  }

  /** How the job ended and what to do next; kept while the same ending shows, so focus on its buttons stays. */
  private renderEnding(view: JobView): void {
    const box = byId('job-outcome');
    const ending = view.ending;
    const key = ending ? `${view.id}|${ending.text}|${ending.actions.join()}` : '';
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.className = ending ? `outcome ${ending.tone}` : 'outcome';
    if (!ending) {
      box.replaceChildren();
      return;
    }
    const target = view.names?.target ?? view.last?.target ?? '';
    // The sentence grows once the job let go of its images: focus on one of its buttons stays on it.
    const focusedAction = (document.activeElement as HTMLElement | null)?.closest('#job-outcome button')?.getAttribute('data-action') ?? null;
    const act = (action: EndAction) => async () => {
      this.sayError('');
      try {
        if (action === 'download') await this.hooks.onDownload(target);
        else if (action === 'delete') await this.hooks.onDelete(target);
        else {
          const id = await this.hooks.onRetry(view.id);
          if (id !== view.id) this.track(id, view.names ?? undefined);
          this.focus();
        }
      } catch (err) {
        this.sayError(explain(err, { image: target }));
      }
    };
    box.replaceChildren(
      h('span', {}, `${ending.text}.`),
      ...ending.actions.map((a) =>
        h('button', { type: 'button', class: a === 'delete' ? 'small danger' : 'small', 'data-action': a, 'aria-label': `${ACTION_LABELS[a]} ${a === 'retry' ? view.id : target}`, onclick: act(a) }, ACTION_LABELS[a]),
      ),
    );
    if (focusedAction) box.querySelector<HTMLButtonElement>(`button[data-action="${focusedAction}"]`)?.focus();
  }

  /**
   * The verb button pressed was disabled (or the job ended): focus goes on
   * to what comes next (Complete once in sync, Resume when paused, Pause
   * when running, the ending's first action), not to the page's body.
   */
  private rescueFocus(view: JobView): void {
    if (!this.keepFocus) return;
    const active = document.activeElement;
    const lost = !active || active === document.body || (active instanceof HTMLButtonElement && active.disabled);
    if (!lost) return;
    const byVerb = (verb: string) => document.querySelector<HTMLButtonElement>(`#job-section [data-verb="${verb}"]:not(:disabled)`);
    const next = view.done ? byId('job-outcome').querySelector('button') : view.ready && !view.paused ? byVerb('complete') : view.paused ? byVerb('resume') : byVerb('pause');
    // Until the job settles (the button wanted is enabled), a stand-in holds focus inside the panel.
    (next ?? this.verbButtons().find((b) => !b.disabled) ?? byId('job-section')).focus();
    if (next && document.activeElement === next) this.keepFocus = false;
  }

  private async verb(verb: string): Promise<void> {
    const id = this.current;
    if (!id) return;
    this.sayError('');
    try {
      if (verb === 'pause') await worker().execute('job-pause', { id });
      else if (verb === 'resume') await worker().execute('job-resume', { id });
      else if (verb === 'complete') await worker().execute('job-complete', { id });
      else if (verb === 'cancel' && this.jobs.get(id)?.paused) await worker().execute('job-cancel', { id });
      else if (verb === 'cancel') await worker().execute('block-job-cancel', { device: id, force: false });
      else if (verb === 'force-cancel') await worker().execute('block-job-cancel', { device: id, force: true });
      const view = this.jobs.get(id);
      if (view && (verb === 'cancel' || verb === 'force-cancel')) {
        view.cancelled = true;
        this.render();
      }
    } catch (err) {
      this.sayError(explain(err));
    }
  }

  private openDialog(id: string, error: EventData['BLOCK_JOB_ERROR']): void {
    const side = error.operation === 'read' ? 'source' : 'target';
    const range = error.bytes > 0 ? `${formatSize(error.bytes)} at ${formatSize(error.offset)} (bytes ${error.offset}–${error.offset + error.bytes - 1})` : 'a flush';
    const ioStatus = error.errno === 'ENOSPC' ? 'nospace' : 'failed';
    byId('stop-title').textContent = `Job ${id} stopped: ${side} ${error.operation} error`;
    byId('stop-text').textContent =
      `${error.operation === 'read' ? 'Reading' : 'Writing'} ${range} of the ${side} failed with ${error.errno}. ` +
      `on-${side}-error paused the job (io-status ${ioStatus}); the range stays dirty and is retried on Resume.`;
    byId('stop-armed').textContent = '';
    this.dialogJob = id;
    if (!this.dialog.open) this.dialog.showModal();
    byId('stop-resume').focus();
    void this.guardResume(id, side, error);
  }

  /**
   * While a fault rule that stopped the job is still there, Resume would
   * meet it again: the dialog says so and Close becomes its default.
   */
  private async guardResume(id: string, side: 'source' | 'target', error: EventData['BLOCK_JOB_ERROR']): Promise<void> {
    let rules: { side: string; rule: string }[] = [];
    try {
      rules = (await worker().execute('fault-list', { device: id })) as { side: string; rule: string }[];
    } catch {
      return;
    }
    const end = error.offset + Math.max(1, error.bytes);
    const armed = rules.find((r) => {
      const { side: ruleSide, rule } = parseFaultSpec(r.rule);
      const to = rule.length === null ? Infinity : rule.offset + rule.length;
      return ruleSide === side && rule.op === error.operation && rule.offset < end && error.offset < to;
    });
    if (!armed || this.dialogJob !== id || !this.dialog.open) return;
    byId('stop-armed').textContent = `The fault that stopped it (${armed.rule}) is still armed: remove it under Faults first, or Resume meets it again.`;
    byId('stop-close').focus();
  }

  private closeDialog(): void {
    this.dialogJob = null;
    if (this.dialog.open) this.dialog.close();
  }

  private async dialogAction(action: 'resume' | 'cancel'): Promise<void> {
    const id = this.dialogJob;
    this.closeDialog();
    if (!id) return;
    this.keepFocus = true;
    try {
      if (action === 'resume') await worker().execute('job-resume', { id });
      else await worker().execute('job-cancel', { id });
    } catch (err) {
      this.sayError(explain(err));
    }
  }
}

/**
 * A description list of label/value pairs, its nodes kept from one progress
 * to the next: only a value that changed is written (no new nodes, no
 * layout of the rest of the panel).
 */
function setPairs(list: HTMLElement, rows: [string, string][]): void {
  const nodes = list.children;
  const same = nodes.length === rows.length * 2 && rows.every(([k], i) => nodes[i * 2]!.textContent === k);
  if (!same) {
    list.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    return;
  }
  rows.forEach(([, v], i) => {
    const dd = nodes[i * 2 + 1]!;
    if (dd.textContent !== v) dd.textContent = v;
  });
}
