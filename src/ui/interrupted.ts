/**
 * Interrupted jobs: those with a checkpoint but no live job (a closed tab,
 * a dead worker, a failure), each to resume or discard, and the section's
 * own error line (a refused resume says why there). A job that read a
 * picked file asks for the file again; an import from a URL resumes by
 * itself, once per page load.
 */
import { formatSize } from '../util/size.js';
import type { InterruptedJob } from '../worker/api-types.js';
import { byId, h } from './dom.js';
import { worker } from './bridge.js';
import type { JobNames } from './job-store.js';
import { explain } from './messages.js';

export interface InterruptedHooks {
  /** A resumed job runs now as `id`; `byPerson` when a person pressed Resume (focus follows). */
  onResumed(id: string, names: JobNames, byPerson: boolean): Promise<void>;
}

/** Where the job stood, in words. */
function standing(job: InterruptedJob): string {
  const what = job.kind === 'import' ? `import of ${job.source} as ${job.target}` : `${job.source} → ${job.target}`;
  const when = new Date(job.savedAt).toLocaleString();
  const left = `${formatSize(job.dirtyBytes)} of ${formatSize(job.size)} left to copy`;
  // A failed job's checkpoint is its last word, saved as it was aborting.
  if (job.status === 'aborting') return `: ${what}; it failed (${when}), with ${left}. `;
  const state = job.status === 'ready' || job.status === 'standby' ? 'in sync' : job.status === 'paused' ? 'paused' : 'copying';
  return `: ${what}; it was ${state} when last saved (${when}), with ${left}. `;
}

export class InterruptedJobs {
  /** URL imports resumed by this page load: each only once (a failing server is not hammered). */
  private readonly autoResumed = new Set<string>();

  constructor(private readonly hooks: InterruptedHooks) {}

  async refresh(): Promise<void> {
    let items: InterruptedJob[] = [];
    try {
      items = await worker().listInterrupted();
    } catch {
      return;
    }
    byId('interrupted-section').hidden = items.length === 0;
    byId('interrupted').replaceChildren(...items.map((job) => this.item(job)));
    for (const job of items) {
      if (job.resumesItself && !this.autoResumed.has(job.id)) {
        this.autoResumed.add(job.id);
        void this.resume(job, undefined, false);
      }
    }
  }

  private item(job: InterruptedJob): HTMLLIElement {
    const input = h('input', { type: 'file', hidden: true });
    input.addEventListener('change', () => {
      const file = input.files?.[0];
      input.value = '';
      if (file) void this.resume(job, file, true);
    });
    const resume = job.pickFile
      ? h('button', { type: 'button', class: 'small', 'aria-label': `Pick ${job.pickFile} to resume ${job.id}`, onclick: () => input.click() }, `Pick ${job.pickFile}…`)
      : h('button', { type: 'button', class: 'small', disabled: Boolean(job.problem), 'aria-label': `Resume interrupted job ${job.id}`, onclick: () => void this.resume(job, undefined, true) }, 'Resume');
    return h(
      'li',
      {},
      h('strong', {}, job.id),
      standing(job),
      job.problem ? h('span', { class: 'error' }, `It cannot resume: ${job.problem}. `) : '',
      job.pickFile ? h('span', {}, `It reads the file ${job.pickFile}, which this page no longer holds: pick the same file again to resume. `) : '',
      job.resumesItself ? h('span', { class: 'muted' }, 'It resumes by itself when the page opens. ') : '',
      input,
      resume,
      ' ',
      h('button', { type: 'button', class: 'small danger', 'aria-label': `Discard interrupted job ${job.id}`, onclick: () => void this.discard(job.id) }, 'Discard'),
    );
  }

  private say(text: string): void {
    byId('interrupted-error').textContent = text;
  }

  private async resume(job: InterruptedJob, file: File | undefined, byPerson: boolean): Promise<void> {
    this.say('');
    try {
      const started = await worker().resumeInterrupted(job.id, file);
      await this.hooks.onResumed(started, { kind: job.kind, source: job.source, target: job.target }, byPerson);
      await this.refresh();
    } catch (err) {
      this.say(explain(err, { image: job.target }));
    }
  }

  private async discard(id: string): Promise<void> {
    this.say('');
    try {
      await worker().discardInterrupted(id);
      await this.refresh();
    } catch (err) {
      this.say(explain(err));
    }
  }
}
