import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { endsAs, errorsSeen, staysPaused, targetEqualsSource } from '../checks.js';
import { AT_RESUME, OUTCOMES, PAUSES } from './choices.js';

export const enospc: Lesson = {
  id: 'enospc',
  title: 'enospc: a full target pauses the job',
  text: 'A target write fails with ENOSPC (no space left) at 5 MiB under on-target-error=enospc. The lesson frees the "space" (lifts the fault); the job waits until you press Resume.',
  teaches: ['on-target-error=enospc', 'ENOSPC', 'io-status nospace'],
  setup: { source: 'demo', target: 'lesson-enospc.raw', options: { sync: 'full', speed: 4 << 20, 'on-target-error': 'enospc' }, faults: ['target:write:ENOSPC:5M+4K'] },
  prediction: { question: 'What happens when the target is full?', choices: OUTCOMES, answer: PAUSES.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: write, ENOSPC, action stop', event: 'BLOCK_JOB_ERROR', match: { operation: 'write', action: 'stop', errno: 'ENOSPC' } },
    status('paused', 'paused, io-status nospace: the lesson frees the space, and you press Resume', [
      { do: 'lift-faults' },
      { do: 'ask', question: AT_RESUME },
      { do: 'await-learner', says: 'The job is paused with io-status nospace, and the lesson freed the space (lifted the fault). Press Resume (in the dialog or the Job panel): the write is tried again.' },
    ]),
    status('running', 'running again'),
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [errorsSeen('write', 'stop', 1, 'ENOSPC'), staysPaused('paused', 'nospace'), endsAs('completed'), targetEqualsSource()],
  why:
    'enospc stops only for ENOSPC: block_job_error_action() answers "stop" when the error is ENOSPC and "report" otherwise. A full disk is a condition a person can fix (free space, grow the volume), so the job waits with io-status nospace instead of failing.',
};
