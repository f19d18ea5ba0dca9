/**
 * The answers a person picks from before a run: the same few words in
 * every lesson, each with what would make it happen, so a wrong pick is
 * told which policy or setting does what was predicted.
 */
import type { Choice } from '../lesson.js';

export const FAILS: Choice = {
  id: 'fails',
  label: 'the job fails',
  means: 'failing at the first error is what report does (and enospc and auto, for any error but ENOSPC)',
};
export const PAUSES: Choice = {
  id: 'pauses',
  label: 'the job pauses until someone resumes it',
  means: 'pausing is what stop does on any error, and enospc and auto on ENOSPC',
};
export const COMPLETES_ANYWAY: Choice = {
  id: 'completes',
  label: 'the job keeps going and completes',
  means: 'a job completes when nothing fails or every failure is retried until it succeeds, and when it can catch up with the guest',
};
export const NEVER_READY: Choice = {
  id: 'never-ready',
  label: 'the job keeps going but never reaches READY',
  means: 'going on without READY is what ignore does while a range keeps failing (it stays dirty), and what a guest faster than the copy causes in background mode',
};
export const CANCELLED: Choice = {
  id: 'cancelled',
  label: 'the job is cancelled and the target left as it is',
  means: 'BLOCK_JOB_CANCELLED ends a job cancelled before READY, or force-cancelled at any time',
};

/** The usual four. */
export const OUTCOMES: Choice[] = [FAILS, PAUSES, COMPLETES_ANYWAY, NEVER_READY];

/** After a fault is lifted (or a guest stops), while the job has not reached READY. */
export const AFTER_LIFT = (what: string, question = `${what}: what happens next?`) => ({
  question,
  choices: [
    { id: 'catches-up', label: 'the job copies what is still dirty and reaches READY', means: 'a range that stays dirty is copied again as soon as it can be' },
    { id: 'still-stuck', label: 'the job still never reaches READY', means: 'staying short of READY is what a fault that keeps failing, or a guest faster than the copy, does' },
    FAILS,
  ],
  answer: 'catches-up',
});

/** Before the learner presses Resume on a job a failure paused. */
export const AT_RESUME = {
  question: 'Before you press Resume: what will the job do?',
  choices: [
    { id: 'retried', label: 'it tries the failed range again, which now succeeds, and goes on', means: 'Resume retries the range that failed: it stayed dirty' },
    { id: 'skipped', label: 'it goes on past the failed range without copying it', means: 'no policy skips a range: one that failed stays dirty until it is copied' },
    { id: 'restarts', label: 'the copy starts again from the beginning', means: 'a copy starts from the beginning only when a job is started anew' },
  ],
  answer: 'retried',
};
