/**
 * The job panel: the shown job of the job store (job-store.ts), drawn and
 * nothing more: its heading and picker, its state in words (QMP's status
 * and io-status as small text), progress, throughput and ETA, the verb
 * buttons (one per verb of qapi/verbs.ts, each enabled only where the verb
 * table allows it), its error line, how the job ended with what to do next
 * (job-ending.ts), the bitmap picture (bitmap-view.ts) and the timeline.
 * The words come from job-words.ts; the dialog a stop opens is
 * stop-dialog.ts. After an action that disables its own button, focus
 * moves to the next control that makes sense, never to the page's body.
 */
import { type PageVerb, PAGE_VERBS, isPageVerb, verbCall } from '../qapi/verbs.js';
import { BitmapView } from './bitmap-view.js';
import { run } from './bridge.js';
import { byId, h } from './dom.js';
import type { EndAction } from './job-ending.js';
import { type JobChange, type JobModel, type JobStore, verbsEnabled } from './job-store.js';
import { cancelHint, jobNote, jobTitle, progressWords, stateDetail, stateWords, statRows } from './job-words.js';
import { explain } from './messages.js';
import { StopDialog } from './stop-dialog.js';
import { drawTimeline } from './timeline.js';

/** Progress is painted at most this often (it comes about ten times a second). */
const PROGRESS_PAINT_MS = 250;

export interface JobPanelHooks {
  /** The picture has room for another number of cells now. */
  onPictureCells(cells: number): void;
  /** An ending's actions. */
  onDownload(image: string): Promise<void>;
  onDelete(image: string): Promise<void>;
  /** Tries an ended job again; the new job's id. */
  onRetry(id: string): Promise<string>;
  /** A stop of this job is not shown yet (a lesson asks first, then hands it over). */
  stopHeld?(id: string): boolean;
}

const ACTION_LABELS: Record<EndAction, string> = { download: 'Download', delete: 'Delete', retry: 'Retry' };

export class JobPanel {
  private readonly bitmap: BitmapView;
  /** A verb button was pressed: once it is disabled, focus goes to the next sensible control. */
  private keepFocus = false;
  /** A drawing of progress is asked for. */
  private frame = 0;
  private lastPaint = 0;
  /** The picker's options as last drawn. */
  private pickerKey = '';

  /** The dialog a stop opens. */
  readonly stops: StopDialog;

  constructor(
    private readonly store: JobStore,
    private readonly hooks: JobPanelHooks,
  ) {
    this.bitmap = new BitmapView((cells) => hooks.onPictureCells(cells));
    this.stops = new StopDialog(store, {
      onAction: () => (this.keepFocus = true),
      onError: (err) => this.sayError(explain(err)),
      held: (id) => hooks.stopHeld?.(id) ?? false,
    });
    for (const verb of PAGE_VERBS) {
      this.button(verb)?.addEventListener('click', () => {
        this.keepFocus = true;
        void this.verb(verb);
      });
    }
    byId<HTMLSelectElement>('job-select').addEventListener('change', (e) => store.select((e.target as HTMLSelectElement).value));
    // A person who moves on elsewhere keeps their focus.
    document.addEventListener('focusin', (e) => {
      if (!byId('job-section').contains(e.target as Node)) this.keepFocus = false;
    });
    store.listen((job, change) => this.changed(job, change));
  }

  /** How many cells the bitmap picture has room for. */
  get pictureCells(): number {
    return this.bitmap.cells;
  }

  /** Moves focus to the job panel (after Start, Resume or Retry). */
  focus(): void {
    byId('job-section').focus();
  }

  private button(verb: PageVerb): HTMLButtonElement | null {
    return document.querySelector<HTMLButtonElement>(`#job-section [data-verb="${verb}"]`);
  }

  private verbButtons(): HTMLButtonElement[] {
    return [...document.querySelectorAll<HTMLButtonElement>('#job-section [data-verb]')];
  }

  private changed(job: JobModel, change: JobChange): void {
    this.renderPicker();
    if (job.id !== this.store.current) return;
    if (change.cause === 'progress') return this.renderSoon();
    if (change.cause === 'track' || change.cause === 'select') {
      this.sayError('');
      this.render();
      this.bitmap.draw(job.picture);
      return;
    }
    this.render();
  }

  private sayError(text: string): void {
    byId('job-error').textContent = text;
  }

  private renderPicker(): void {
    const jobs = this.store.all();
    const key = JSON.stringify([this.store.current, ...jobs.map(jobTitle)]);
    if (key === this.pickerKey) return;
    this.pickerKey = key;
    const select = byId<HTMLSelectElement>('job-select');
    select.replaceChildren(...jobs.map((job) => new Option(jobTitle(job), job.id, false, job.id === this.store.current)));
    byId('job-picker').hidden = jobs.length < 2;
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
        this.render();
        const job = this.shown();
        if (job) this.bitmap.draw(job.picture);
      });
    }, wait);
  }

  private shown(): JobModel | undefined {
    const id = this.store.current;
    return id ? this.store.get(id) : undefined;
  }

  private render(): void {
    const job = this.shown();
    const buttons = this.verbButtons();
    if (!job) {
      byId('job-state').textContent = 'No job yet';
      for (const b of buttons) b.disabled = true;
      return;
    }
    const title = `Job ${jobTitle(job)}`;
    if (byId('job-heading').textContent !== title) byId('job-heading').textContent = title;
    const ending = job.done || job.ending ? job.ending : null;
    const words = ending?.word ?? stateWords(job);
    const qmp = stateDetail(job);
    const state = byId('job-state');
    // Changed only when it says something new: it is a live region.
    if (state.textContent !== `${words} ${qmp}`) state.replaceChildren(h('span', {}, words), ' ', h('small', { class: 'qmp' }, qmp));
    this.renderEnding(job);
    const enabled = verbsEnabled(job);
    for (const b of buttons) b.disabled = !(isPageVerb(b.dataset.verb ?? '') && enabled[b.dataset.verb as PageVerb]);
    this.button('cancel')?.setAttribute('title', cancelHint(job));
    this.rescueFocus(job);

    const bar = byId('progress');
    const { percent, valueText } = progressWords(job);
    if (bar.getAttribute('aria-valuetext') !== valueText) {
      bar.setAttribute('aria-valuenow', String(percent));
      bar.setAttribute('aria-valuetext', valueText);
    }
    // A transform, not a width: the bar moves on the compositor, with no layout of the page.
    (bar.firstElementChild as HTMLElement).style.transform = `scaleX(${percent / 100})`;
    bar.classList.toggle('stopped', job.paused && !ending);
    bar.classList.toggle('failed', ending?.tone === 'failed');
    bar.classList.toggle('cancelled', ending?.tone === 'cancelled');
    const now = Date.now();
    setPairs(byId('job-stats'), statRows(job, now));
    const note = jobNote(job, now);
    if (byId('job-note').textContent !== note) byId('job-note').textContent = note;
    const timeline = this.store.timeline(job.id);
    if (timeline) drawTimeline(timeline);
  }

  /** How the job ended and what to do next; kept while the same ending shows, so focus on its buttons stays. */
  private renderEnding(job: JobModel): void {
    const box = byId('job-outcome');
    const ending = job.ending;
    const key = ending ? `${job.id}|${ending.text}|${ending.advice ?? ''}|${ending.actions.join()}` : '';
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.className = ending ? `outcome ${ending.tone}` : 'outcome';
    if (!ending) {
      box.replaceChildren();
      return;
    }
    const target = job.names?.target ?? job.last?.target ?? '';
    // The sentence grows once the job let go of its images: focus on one of its buttons stays on it.
    const focusedAction = (document.activeElement as HTMLElement | null)?.closest('#job-outcome button')?.getAttribute('data-action') ?? null;
    const act = (action: EndAction) => async () => {
      this.sayError('');
      try {
        if (action === 'download') await this.hooks.onDownload(target);
        else if (action === 'delete') await this.hooks.onDelete(target);
        else {
          const id = await this.hooks.onRetry(job.id);
          if (id !== job.id) this.store.track(id, job.names ?? undefined);
          this.focus();
        }
      } catch (err) {
        this.sayError(explain(err, { image: target }));
      }
    };
    box.replaceChildren(
      h('span', {}, `${ending.text}.`),
      ...ending.actions.map((a) =>
        h('button', { type: 'button', class: a === 'delete' ? 'small danger' : 'small', 'data-action': a, 'aria-label': `${ACTION_LABELS[a]} ${a === 'retry' ? job.id : target}`, onclick: act(a) }, ACTION_LABELS[a]),
      ),
      ...(ending.advice ? [h('p', { class: 'advice' }, ending.advice)] : []),
    );
    if (focusedAction) box.querySelector<HTMLButtonElement>(`button[data-action="${focusedAction}"]`)?.focus();
  }

  /**
   * The verb button pressed was disabled (or the job ended): focus goes on
   * to what comes next (Complete once in sync, Resume when paused, Pause
   * when running, the ending's first action), not to the page's body.
   */
  private rescueFocus(job: JobModel): void {
    if (!this.keepFocus) return;
    const active = document.activeElement;
    // The panel itself holds focus only as a stand-in while the job settles: the keyboard's Complete ends on Download as the mouse's does.
    const lost = !active || active === document.body || active === byId('job-section') || (active instanceof HTMLButtonElement && active.disabled);
    if (!lost) return;
    const byVerb = (verb: PageVerb) => document.querySelector<HTMLButtonElement>(`#job-section [data-verb="${verb}"]:not(:disabled)`);
    const next = job.done ? byId('job-outcome').querySelector('button') : job.ready && !job.paused ? byVerb('complete') : job.paused ? byVerb('resume') : byVerb('pause');
    // Until the job settles (the button wanted is enabled), a stand-in holds focus inside the panel.
    (next ?? this.verbButtons().find((b) => !b.disabled) ?? byId('job-section')).focus();
    if (next && document.activeElement === next) this.keepFocus = false;
  }

  private async verb(verb: PageVerb): Promise<void> {
    const job = this.shown();
    if (!job) return;
    this.sayError('');
    try {
      await run(verbCall(verb, job.id, { paused: job.paused }));
      this.store.accepted(job.id, verb);
    } catch (err) {
      this.sayError(explain(err));
    }
  }
}

/**
 * A description list of label/value pairs, each pair in its own box (a
 * label over its value), its nodes kept from one progress to the next:
 * only a value that changed is written (no new nodes, no layout of the
 * rest of the panel).
 */
/** Figures whose values run long take two columns (long), or the whole row on a phone (wide too). */
const FIGURE_CLASS: Record<string, string> = { Copied: 'wide', Throughput: 'long', ETA: 'long', Guest: 'long' };

function setPairs(list: HTMLElement, rows: [string, string][]): void {
  const boxes = list.children;
  const same = boxes.length === rows.length && rows.every(([k], i) => boxes[i]!.firstElementChild!.textContent === k);
  if (!same) {
    list.replaceChildren(...rows.map(([k, v]) => h('div', { class: FIGURE_CLASS[k] }, h('dt', {}, k), h('dd', {}, v))));
    return;
  }
  rows.forEach(([, v], i) => {
    const dd = boxes[i]!.lastElementChild!;
    if (dd.textContent !== v) dd.textContent = v;
  });
}
