/**
 * The teaching panel: fault rules on the running job, and a guest writing
 * to its source. It says what went wrong on its own error line.
 */
import { jobIsGone } from '../shared/worker-error.js';
import { parseSize } from '../util/size.js';
import { byId, h } from './dom.js';
import { worker } from './bridge.js';
import { explain } from './messages.js';

interface ListedRule {
  side: string;
  index: number;
  rule: string;
  hits: number;
}

export class FaultPanel {
  constructor(private readonly currentJob: () => string | null) {
    byId<HTMLFormElement>('fault-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.add();
    });
    const guest = byId<HTMLInputElement>('guest-switch');
    guest.addEventListener('change', () => void this.guest(guest.checked));
    byId<HTMLInputElement>('guest-rate').addEventListener('change', () => {
      if (guest.checked) void this.guest(true);
    });
  }

  private say(text: string): void {
    byId('fault-error').textContent = text;
  }

  private job(): string | null {
    const id = this.currentJob();
    if (!id) this.say('Start a job first: faults and guest writes act on the running job.');
    return id;
  }

  async add(): Promise<void> {
    const id = this.job();
    if (!id) return;
    try {
      const side = byId<HTMLSelectElement>('fault-side').value;
      const op = byId<HTMLSelectElement>('fault-op').value;
      const errno = byId<HTMLSelectElement>('fault-errno').value;
      const offset = parseSize(byId<HTMLInputElement>('fault-offset').value || '0', 'Fault offset');
      const lengthText = byId<HTMLInputElement>('fault-length').value.trim();
      const range = lengthText === '' ? `${offset}-` : `${offset}+${parseSize(lengthText, 'Fault length')}`;
      const once = byId<HTMLInputElement>('fault-once').checked ? ':once' : '';
      await worker().execute('fault-add', { device: id, rule: `${side}:${op}:${errno}:${range}${once}` });
      this.say('');
      await this.refresh();
    } catch (err) {
      this.say(explain(err));
    }
  }

  async refresh(): Promise<void> {
    const id = this.currentJob();
    const list = byId('fault-list');
    if (!id) {
      list.replaceChildren();
      return;
    }
    let rules: ListedRule[] = [];
    try {
      rules = (await worker().execute('fault-list', { device: id })) as ListedRule[];
    } catch (err) {
      // A job that is gone has no rules left to list.
      if (!jobIsGone(err)) this.say(explain(err));
    }
    list.replaceChildren(
      ...rules.map((r) =>
        h(
          'li',
          {},
          h('code', {}, r.rule),
          ` — hit ${r.hits} time${r.hits === 1 ? '' : 's'} `,
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove fault ${r.rule}`, onclick: () => void this.remove(id, r.index) }, 'Remove'),
        ),
      ),
    );
  }

  /** Removes a rule; focus goes to the rule now in its place (or the one before, or Add fault when none is left). */
  private async remove(id: string, index: number): Promise<void> {
    const list = byId('fault-list');
    const position = [...list.querySelectorAll('button')].findIndex((b) => b === document.activeElement);
    try {
      await worker().execute('fault-remove', { device: id, index });
      await this.refresh();
    } catch (err) {
      this.say(explain(err));
    }
    if (position < 0) return;
    const buttons = [...list.querySelectorAll<HTMLButtonElement>('button')];
    (buttons[Math.min(position, buttons.length - 1)] ?? byId('fault-form').querySelector<HTMLButtonElement>('button[type=submit]'))?.focus();
  }

  private async guest(on: boolean): Promise<void> {
    const id = this.job();
    const toggle = byId<HTMLInputElement>('guest-switch');
    if (!id) {
      toggle.checked = false;
      return;
    }
    try {
      if (on) {
        const rate = parseSize(byId<HTMLInputElement>('guest-rate').value, 'Guest write rate');
        await worker().startGuestWrites(id, rate);
        byId('guest-stats').textContent = `writing about ${byId<HTMLInputElement>('guest-rate').value}/s of random data to the source`;
      } else {
        const s = await worker().stopGuestWrites(id);
        byId('guest-stats').textContent = s ? `the guest wrote ${s.writes} times` : '';
      }
    } catch (err) {
      toggle.checked = false;
      this.say(explain(err));
    }
  }

  /** The job ended: the guest has stopped with it. */
  jobEnded(id: string): void {
    if (id === this.currentJob()) byId<HTMLInputElement>('guest-switch').checked = false;
    void this.refresh();
  }
}
