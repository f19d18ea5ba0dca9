import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS } from '../lesson.js';
import { endsAs, errorsSeen, noReadyBeforeLift, targetEqualsSource } from '../checks.js';
import { AFTER_LIFT, NEVER_READY, OUTCOMES } from './choices.js';

/** What many expect of ignore. */
const SKIPS = { id: 'skips', label: 'the job skips the bad range and completes without it', means: 'no policy skips data: ignore reports the error and keeps the range dirty, so it is read again until it succeeds' };

const ignored = { label: 'BLOCK_JOB_ERROR: read, action ignore', event: 'BLOCK_JOB_ERROR', match: { operation: 'read', action: 'ignore' } } as const;

export const ignore: Lesson = {
  id: 'ignore',
  title: 'ignore: the range stays dirty and is retried',
  text: 'A source read fails at 5 MiB, every time, under on-source-error=ignore. After the third error the lesson lifts the fault.',
  teaches: ['on-source-error=ignore', 'BLOCK_JOB_ERROR', 'READY'],
  setup: { source: 'demo', target: 'lesson-ignore.raw', options: { sync: 'full', speed: 4 << 20, 'on-source-error': 'ignore' }, faults: ['source:read:EIO:5M+4K'] },
  prediction: { question: 'What does the job do while the read keeps failing?', choices: [...OUTCOMES, SKIPS], answer: NEVER_READY.id },
  expected: [
    ...STARTS,
    { ...ignored },
    { ...ignored, label: 'the same error again: the range was retried' },
    { ...ignored, label: 'and again: the lesson lifts the fault', then: [{ do: 'ask', question: AFTER_LIFT('The lesson is about to lift the fault') }, { do: 'lift-faults' }] },
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [errorsSeen('read', 'ignore', 3), noReadyBeforeLift('the read fails'), endsAs('completed'), targetEqualsSource()],
  why:
    'Under ignore, block_job_error_action() answers "ignore": the job reports the error and goes on, but the failed chunk stays dirty in the bitmap and is copied again later. READY needs a clean bitmap, so while the error lasts the job cannot converge; once the fault is lifted, the retry succeeds and the job reaches READY.',
};
