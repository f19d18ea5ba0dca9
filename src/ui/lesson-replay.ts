/**
 * A lesson's timeline: while it runs and after, a slider moves through the
 * frames the page kept (lessons/record.ts) and shows the job as it was at
 * that moment: the bitmap's picture, the state and io-status, what was
 * copied, and the event lines up to then. Left at its end it follows the
 * run; moved back it stays where it was put. Copy link to this run gives a
 * link that shows the same timeline without running anything.
 */
import type { RunRecord } from '../lessons/record.js';
import { encodeRecord, moment } from '../lessons/record.js';
import type { CellState } from '../mirror/types.js';
import { formatSize } from '../util/size.js';
import { paintCells } from './bitmap-view.js';
import { byId, h } from './dom.js';
import { eventWords, sinceStart } from './event-words.js';

const CELL_NAMES: Record<string, CellState> = { c: 'clean', z: 'zero', d: 'dirty', i: 'inflight', f: 'failed' };

export class LessonReplay {
  private record: RunRecord | null = null;
  private readonly slider = byId<HTMLInputElement>('lesson-timeline');

  constructor() {
    this.slider.addEventListener('input', () => this.show());
    byId('lesson-copy-link').addEventListener('click', () => void this.copyLink());
  }

  /** Shows `record` (a live one grows: call `update` after each frame). */
  open(record: RunRecord | null): void {
    this.record = record;
    byId('lesson-replay').hidden = record === null;
    byId<HTMLInputElement>('lesson-link').value = '';
    byId('lesson-link-row').hidden = true;
    this.update(true);
  }

  /** The record grew: a slider left at its end follows it. */
  update(toEnd = false): void {
    const r = this.record;
    if (!r) return;
    const atEnd = toEnd || Number(this.slider.value) >= Number(this.slider.max);
    this.slider.max = String(Math.max(0, r.frames.length - 1));
    if (atEnd) this.slider.value = this.slider.max;
    this.show();
  }

  /** Whether a finished run is shown (its link can be copied). */
  finished(done: boolean): void {
    byId<HTMLButtonElement>('lesson-copy-link').disabled = !done;
  }

  private show(): void {
    const r = this.record;
    if (!r) return;
    const i = Number(this.slider.value);
    const { frame, events } = moment(r, i);
    const t0 = r.frames[0]?.atMs ?? 0;
    if (!frame) {
      byId('lesson-moment').textContent = 'Nothing seen yet.';
      return;
    }
    const words = `${sinceStart(frame.atMs - t0)}: ${frame.status}${frame.ioStatus !== 'ok' ? `, io-status ${frame.ioStatus}` : ''}; ${formatSize(frame.offset)} of ${formatSize(frame.len)} copied`;
    byId('lesson-moment').textContent = words;
    this.slider.setAttribute('aria-valuetext', words);
    const canvas = byId<HTMLCanvasElement>('lesson-picture');
    if (frame.cells) paintCells(canvas, [...frame.cells].map((c) => CELL_NAMES[c]!), Math.max(64, canvas.clientWidth || canvas.width));
    byId('lesson-moment-events').replaceChildren(
      ...events.map(({ atMs, event }) => {
        const line = eventWords(event);
        return h('li', { class: `ev-${line.kind}` }, `${sinceStart(atMs - t0)} ${line.text}`);
      }),
      ...(r.eventsDropped ? [h('li', { class: 'muted' }, `(${r.eventsDropped} later events were not kept)`)] : []),
    );
    // The latest line of that moment in view.
    const list = byId('lesson-moment-events');
    list.scrollTop = list.scrollHeight;
  }

  private async copyLink(): Promise<void> {
    if (!this.record) return;
    const link = `${location.origin}${location.pathname}#run/${encodeRecord(this.record)}`;
    const field = byId<HTMLInputElement>('lesson-link');
    field.value = link;
    byId('lesson-link-row').hidden = false;
    try {
      await navigator.clipboard.writeText(link);
      byId('lesson-link-state').textContent = 'Copied: anyone who opens it sees this run, without running it.';
    } catch {
      field.select();
      byId('lesson-link-state').textContent = 'The browser did not let the page copy: the link is selected, copy it yourself.';
    }
  }
}
