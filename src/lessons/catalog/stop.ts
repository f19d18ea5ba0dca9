import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { endsAs, errorsSeen, staysPaused, targetEqualsSource } from '../checks.js';
import { AT_RESUME, OUTCOMES, PAUSES } from './choices.js';

export const stop: Lesson = {
  id: 'stop',
  title: 'stop: the job pauses, Resume retries the range',
  text: 'A source read fails at 5 MiB under on-source-error=stop. Once the job has paused, the lesson lifts the fault; the job stays paused until you press Resume.',
  teaches: ['on-source-error=stop', 'io-status failed', 'paused', 'job-resume'],
  setup: { source: 'demo', target: 'lesson-stop.raw', options: { sync: 'full', speed: 4 << 20, 'on-source-error': 'stop' }, faults: ['source:read:EIO:5M+4K'] },
  prediction: { question: 'What happens at the failing read?', choices: OUTCOMES, answer: PAUSES.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: read, action stop', event: 'BLOCK_JOB_ERROR', match: { operation: 'read', action: 'stop' } },
    status('paused', 'paused, io-status failed: the lesson lifts the fault, and you press Resume', [
      { do: 'lift-faults' },
      { do: 'ask', question: AT_RESUME },
      { do: 'await-learner', says: 'The job is paused with io-status failed, and the lesson lifted the fault. Press Resume (in the dialog or the Job panel): the failed range is read again.' },
    ]),
    status('running', 'running again: the failed range is retried'),
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [errorsSeen('read', 'stop', 1), staysPaused('paused', 'failed'), endsAs('completed'), targetEqualsSource()],
  why:
    'Under stop, block_job_error_action() answers "stop": the job pauses itself and its io-status becomes failed. Nothing is lost: the range stays dirty. job-resume (or block-job-resume) clears the io-status and the range is read again; without the fault it succeeds.',
};
