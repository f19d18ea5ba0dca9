/** The event log: QMP-shaped events, newest last, copyable as JSON lines. */
import type { AnyQmpEvent } from '../mirror/events.js';
import { byId, h } from './dom.js';

const MAX_SHOWN = 2000;

export class EventLog {
  private readonly lines: string[] = [];

  constructor() {
    byId('copy-events').addEventListener('click', () => void this.copy());
  }

  add(e: AnyQmpEvent): void {
    const line = JSON.stringify(e);
    this.lines.push(line);
    const list = byId('events');
    // The list scrolls inside the log's box: follow the newest line unless the reader scrolled up.
    const box = byId('events-log');
    const failed = e.event === 'BLOCK_JOB_ERROR' || (e.event === 'BLOCK_JOB_COMPLETED' && Boolean(e.data.error));
    const item = h('li', { class: failed ? 'error' : '' }, line);
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    list.append(item);
    while (list.childElementCount > MAX_SHOWN) list.firstElementChild!.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
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
      // No clipboard permission: select the text so the person can copy it.
      const range = document.createRange();
      range.selectNodeContents(byId('events'));
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
      status.textContent = 'Selected the events: press Ctrl+C (or ⌘C) to copy.';
    }
  }
}
