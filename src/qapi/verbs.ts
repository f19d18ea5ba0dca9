/**
 * The verbs a person (or a lesson) applies to a running job, and the QMP
 * command each stands for: written once, here. The panel's buttons and the
 * lessons' actions both go through `verbCall`; `JOB_VERB` names the verb of
 * QEMU's verb table (job-states.ts) that allows each.
 */
import type { Call } from './commands.js';
import type { JobVerb } from './job-states.js';

export const PAGE_VERBS = ['pause', 'resume', 'complete', 'cancel', 'force-cancel'] as const;
export type PageVerb = (typeof PAGE_VERBS)[number];

/** The verb of QEMU's table that allows each (a forced cancel is still a cancel). */
export const JOB_VERB: Readonly<Record<PageVerb, JobVerb>> = {
  pause: 'pause',
  resume: 'resume',
  complete: 'complete',
  cancel: 'cancel',
  'force-cancel': 'cancel',
};

export function isPageVerb(verb: string): verb is PageVerb {
  return (PAGE_VERBS as readonly string[]).includes(verb);
}

/**
 * The command a verb stands for on job `id`. Cancel is block-job-cancel
 * without force (after READY it finishes the copy without switching over),
 * except of a `paused` job: QMP refuses a soft cancel of a paused job, so
 * it cancels at once as job-cancel does.
 */
export function verbCall(verb: PageVerb, id: string, state: { paused?: boolean } = {}): Call {
  switch (verb) {
    case 'pause':
      return { command: 'job-pause', args: { id } };
    case 'resume':
      return { command: 'job-resume', args: { id } };
    case 'complete':
      return { command: 'job-complete', args: { id } };
    case 'cancel':
      return state.paused ? { command: 'job-cancel', args: { id } } : { command: 'block-job-cancel', args: { device: id, force: false } };
    case 'force-cancel':
      return { command: 'block-job-cancel', args: { device: id, force: true } };
  }
}
