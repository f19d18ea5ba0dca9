/**
 * The event log: each QMP event as a line in words (event-words.ts) with
 * the time since its job started, coloured by kind; a line repeated at
 * once is folded into the one before ("×29"); each line's JSON one click
 * away, the whole log as JSON lines behind a toggle and on the clipboard
 * (Copy as JSON lines); a filter by job and by kind.
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import { byId, h } from './dom.js';
import { type EventKind, type JobPolicies, eventTime, eventWords, sinceStart } from './event-words.js';

const MAX_SHOWN = 2000;

interface Shown {
  key: string;
  item: HTMLLIElement;
  count: number;
}

export class EventLog {
  private readonly lines: string[] = [];
  /** When each job started (its first event), and its policies when the page started it. */
  private readonly jobs = new Map<string, { start: number; policies: JobPolicies }>();
  private last: Shown | null = null;
  /** The log is scrolled to its end (kept by its scroll events: adding a line never forces a layout). */
  private atBottom = true;
  private scrollFrame = 0;

  constructor() {
    const box = byId('events-log');
    box.addEventListener('scroll', () => {
      this.atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    }, { passive: true });
    byId('copy-events').addEventListener('click', () => void this.copy());
    byId('show-json').addEventListener('click', () => this.toggleJson());
    byId('events-job').addEventListener('change', () => this.filter());
    byId('events-kind').addEventListener('change', () => this.filter());
  }

  /** A job the page started: its error lines name its policies. */
  jobStarted(id: string, policies: JobPolicies): void {
    const known = this.jobs.get(id);
    if (known) known.policies = policies;
    else this.jobs.set(id, { start: Number.NaN, policies });
  }

  add(e: AnyQmpEvent): void {
    const json = JSON.stringify(e);
    this.lines.push(json);
    const shownJson = byId('events-json');
    if (!shownJson.hidden) shownJson.textContent += `${json}\n`;
    const at = eventTime(e);
    const words = eventWords(e, this.jobs.get(e.event === 'JOB_STATUS_CHANGE' || e.event === 'BLOCK_JOB_PENDING' ? e.data.id : e.data.device)?.policies);
    let job = this.jobs.get(words.job);
    if (!job) this.jobs.set(words.job, (job = { start: at, policies: {} }));
    if (Number.isNaN(job.start)) job.start = at;
    // A new job starts its own clock (a resumed one too).
    if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'created') job.start = at;
    const time = sinceStart(at - job.start);
    const key = `${words.job} ${words.text}`;
    const list = byId('events');
    if (this.last && this.last.key === key && this.last.item.isConnected) {
      this.last.count++;
      this.fill(this.last.item, time, words.job, words.text, json, this.last.count);
    } else {
      const item = h('li', { class: `kind-${words.kind}`, 'data-job': words.job, 'data-kind': words.kind });
      this.fill(item, time, words.job, words.text, json, 1);
      list.append(item);
      this.last = { key, item, count: 1 };
      this.addJobOption(words.job);
      item.hidden = !this.visible(item);
    }
    while (list.childElementCount > MAX_SHOWN) list.firstElementChild!.remove();
    // A log read at its end follows new lines, once a frame.
    if (this.atBottom && !this.scrollFrame) {
      this.scrollFrame = requestAnimationFrame(() => {
        this.scrollFrame = 0;
        const box = byId('events-log');
        box.scrollTop = box.scrollHeight;
      });
    }
  }

  private fill(item: HTMLLIElement, time: string, job: string, text: string, json: string, count: number): void {
    item.replaceChildren(
      h(
        'details',
        {},
        h('summary', {}, h('span', { class: 'time' }, time), ' ', h('span', { class: 'job' }, job), ' ', text, count > 1 ? h('span', { class: 'repeats' }, ` ×${count}`) : ''),
        h('code', {}, count > 1 ? `last of ${count}: ${json}` : json),
      ),
    );
  }

  private addJobOption(job: string): void {
    const select = byId<HTMLSelectElement>('events-job');
    if (![...select.options].some((o) => o.value === job)) select.append(new Option(job, job));
  }

  private visible(item: HTMLElement): boolean {
    const job = byId<HTMLSelectElement>('events-job').value;
    const kind = byId<HTMLSelectElement>('events-kind').value as EventKind | '';
    return (!job || item.dataset.job === job) && (!kind || item.dataset.kind === kind);
  }

  private filter(): void {
    for (const item of byId('events').children) (item as HTMLElement).hidden = !this.visible(item as HTMLElement);
  }

  private toggleJson(): void {
    const pre = byId('events-json');
    pre.hidden = !pre.hidden;
    if (!pre.hidden) pre.textContent = this.text();
    byId('show-json').setAttribute('aria-expanded', String(!pre.hidden));
    byId('show-json').textContent = pre.hidden ? 'Show as JSON lines' : 'Hide the JSON lines';
  }

  /** All events so far, one JSON object per line. */
  text(): string {
    return this.lines.map((l) => `${l}\n`).join('');
  }

  private async copy(): Promise<void> {
    const status = byId('copy-status');
    try {
      await navigator.clipboard.writeText(this.text());
      status.textContent = `Copied ${this.lines.length} events.`;
    } catch {
      // No clipboard permission: show the JSON lines selected, for the person to copy.
      const pre = byId('events-json');
      if (pre.hidden) this.toggleJson();
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
      status.textContent = 'Selected the events as JSON lines: press Ctrl+C (or ⌘C) to copy.';
    }
  }
}
