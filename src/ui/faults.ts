/**
 * The teaching panel: fault rules and a guest writing to the source. With
 * no job running, rules and the guest are armed: Start mirror hands them
 * to the job, which meets them from its first request (as the command
 * line's --inject). While a job runs they are the job's: listed with their
 * hit counts, added and removed live. They stay armed for the next job
 * when it ends, so an experiment is repeated by pressing Start again. The
 * panel never names a job that is over.
 */
import { jobIsGone } from '../shared/worker-error.js';
import type { ListedFault } from '../qapi/commands.js';
import { parseFaultSpec, formatFaultSpec } from '../qapi/faults.js';
import { parseSize } from '../util/size.js';
import { byId, h } from './dom.js';
import { noteCommand, worker } from './bridge.js';
import { explain } from './messages.js';

export class FaultPanel {
  /** The rules the next job starts with (and the running one was given, with what was added since). */
  private armed: string[] = [];

  constructor(
    private readonly runningJob: () => string | null,
    /** The running job's rules, each time they are listed (the stop dialog stops calling a removed one armed). */
    private readonly onListed: (id: string, rules: readonly string[]) => void = () => {},
  ) {
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

  /** What Start mirror hands to a new job. */
  forStart(): { faults: string[]; guest?: number } {
    const out: { faults: string[]; guest?: number } = { faults: [...this.armed] };
    if (byId<HTMLInputElement>('guest-switch').checked) out.guest = parseSize(byId<HTMLInputElement>('guest-rate').value, 'Guest write rate');
    return out;
  }

  /** Arms exactly these rules and this guest (a lesson's set-up); nothing runs meanwhile. */
  async arm(rules: string[], guestRate?: number): Promise<void> {
    this.armed = rules.map((r) => formatFaultSpec(parseFaultSpec(r)));
    byId<HTMLInputElement>('guest-switch').checked = guestRate !== undefined;
    if (guestRate !== undefined) byId<HTMLInputElement>('guest-rate').value = String(guestRate);
    byId('guest-stats').textContent = guestRate !== undefined ? 'armed: the guest starts writing when the job starts' : '';
    await this.refresh();
  }

  /** Removes every rule, from the running job and from the armed set. */
  async liftAll(): Promise<void> {
    this.armed = [];
    const id = this.runningJob();
    if (id) await worker().execute('fault-remove', { device: id, all: true });
    await this.refresh();
  }

  private rule(): string {
    const side = byId<HTMLSelectElement>('fault-side').value;
    const op = byId<HTMLSelectElement>('fault-op').value;
    const errno = byId<HTMLSelectElement>('fault-errno').value;
    const offset = parseSize(byId<HTMLInputElement>('fault-offset').value || '0', 'Fault offset');
    const lengthText = byId<HTMLInputElement>('fault-length').value.trim();
    const range = lengthText === '' ? `${offset}-` : `${offset}+${parseSize(lengthText, 'Fault length')}`;
    const once = byId<HTMLInputElement>('fault-once').checked ? ':once' : '';
    // Checked here too, so an armed rule is as valid as one the job took.
    return formatFaultSpec(parseFaultSpec(`${side}:${op}:${errno}:${range}${once}`));
  }

  async add(): Promise<void> {
    try {
      const rule = this.rule();
      const id = this.runningJob();
      if (id) {
        noteCommand(id);
        await worker().execute('fault-add', { device: id, rule });
      }
      this.armed.push(rule);
      this.say('');
      await this.refresh();
    } catch (err) {
      this.say(explain(err));
    }
  }

  async refresh(): Promise<void> {
    const id = this.runningJob();
    const list = byId('fault-list');
    let rules: ListedFault[] | null = null;
    if (id) {
      try {
        rules = await worker().execute('fault-list', { device: id });
      } catch (err) {
        // A job that is gone has no rules: the armed ones are listed.
        if (!jobIsGone(err)) this.say(explain(err));
      }
    }
    if (rules && id) {
      this.onListed(id, rules.map((r) => r.rule));
      list.replaceChildren(
        ...rules.map((r) =>
          h(
            'li',
            {},
            h('code', {}, r.rule),
            ` — hit ${r.hits} time${r.hits === 1 ? '' : 's'} `,
            h('button', { type: 'button', class: 'small', 'aria-label': `Remove fault ${r.rule}`, onclick: () => void this.remove(r.rule, () => (noteCommand(id), worker().execute('fault-remove', { device: id, index: r.index }))) }, 'Remove'),
          ),
        ),
      );
      return;
    }
    list.replaceChildren(
      ...this.armed.map((rule) =>
        h(
          'li',
          {},
          h('code', {}, rule),
          h('span', { class: 'muted' }, ' — armed: applies from the next job\u2019s first request '),
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove fault ${rule}`, onclick: () => void this.remove(rule) }, 'Remove'),
        ),
      ),
    );
  }

  /** Removes a rule; focus goes to the rule now in its place (or the one before, or Add fault when none is left). */
  private async remove(rule: string, fromJob?: () => Promise<unknown>): Promise<void> {
    const list = byId('fault-list');
    const position = [...list.querySelectorAll('button')].findIndex((b) => b === document.activeElement);
    try {
      await fromJob?.();
      const at = this.armed.indexOf(rule);
      if (at >= 0) this.armed.splice(at, 1);
      await this.refresh();
    } catch (err) {
      this.say(explain(err));
    }
    if (position < 0) return;
    const buttons = [...list.querySelectorAll<HTMLButtonElement>('button')];
    (buttons[Math.min(position, buttons.length - 1)] ?? byId('fault-form').querySelector<HTMLButtonElement>('button[type=submit]'))?.focus();
  }

  private async guest(on: boolean): Promise<void> {
    const id = this.runningJob();
    const toggle = byId<HTMLInputElement>('guest-switch');
    const stats = byId('guest-stats');
    try {
      const rate = parseSize(byId<HTMLInputElement>('guest-rate').value, 'Guest write rate');
      if (!id) {
        stats.textContent = on ? 'armed: the guest starts writing when the job starts' : '';
        return;
      }
      noteCommand(id);
      if (on) {
        await worker().startGuestWrites(id, rate);
        stats.textContent = `writing about ${byId<HTMLInputElement>('guest-rate').value}/s of random data to the source`;
      } else {
        const s = await worker().stopGuestWrites(id);
        stats.textContent = s ? `the guest wrote ${s.writes} times` : '';
      }
    } catch (err) {
      if (jobIsGone(err)) {
        stats.textContent = on ? 'armed: the guest starts writing when the job starts' : '';
        return;
      }
      toggle.checked = false;
      this.say(explain(err));
    }
  }

  /** Stops the guest of the running job (a lesson's guest-off); it is not armed for the next one either. */
  async guestOff(): Promise<void> {
    byId<HTMLInputElement>('guest-switch').checked = false;
    await this.guest(false);
  }

  /** The job ended: its rules are the armed ones again; the guest stays armed if it was on. */
  jobEnded(): void {
    const guest = byId<HTMLInputElement>('guest-switch').checked;
    byId('guest-stats').textContent = guest ? 'armed: the guest starts writing when the next job starts' : '';
    void this.refresh();
  }
}
