/**
 * Interrupted jobs: those with a checkpoint but no live job (a closed tab,
 * a dead worker, a failure), each to resume or discard, and the section's
 * own error line (a refused resume says why there).
 */
import { formatSize } from '../util/size.js';
import type { InterruptedJob } from '../worker/api-types.js';
import { byId, errorText, h } from './dom.js';
import { worker } from './bridge.js';

export interface InterruptedHooks {
  /** A resumed job runs now as `id`. */
  onResumed(id: string): Promise<void>;
}

export class InterruptedJobs {
  constructor(private readonly hooks: InterruptedHooks) {}

  async refresh(): Promise<void> {
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
          h('button', { type: 'button', class: 'small', disabled: Boolean(job.problem), 'aria-label': `Resume interrupted job ${job.id}`, onclick: () => void this.resume(job.id) }, 'Resume'),
          ' ',
          h('button', { type: 'button', class: 'small danger', 'aria-label': `Discard interrupted job ${job.id}`, onclick: () => void this.discard(job.id) }, 'Discard'),
        ),
      ),
    );
  }

  private say(text: string): void {
    byId('interrupted-error').textContent = text;
  }

  private async resume(id: string): Promise<void> {
    this.say('');
    try {
      const started = await worker().resumeInterrupted(id);
      await this.hooks.onResumed(started);
      await this.refresh();
    } catch (err) {
      this.say(errorText(err));
    }
  }

  private async discard(id: string): Promise<void> {
    this.say('');
    try {
      await worker().discardInterrupted(id);
      await this.refresh();
    } catch (err) {
      this.say(errorText(err));
    }
  }
}
