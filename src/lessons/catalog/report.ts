import { FAILS_WITH_EIO, type Lesson, STARTS } from '../lesson.js';
import { endsAs, errorsSeen } from '../checks.js';
import { FAILS, OUTCOMES } from './choices.js';

export const report: Lesson = {
  id: 'report',
  title: 'report: the first error ends the job',
  text: 'A source read fails at 5 MiB. The job runs with the default policy for source errors, report.',
  teaches: ['on-source-error=report', 'BLOCK_JOB_ERROR', 'BLOCK_JOB_COMPLETED with error'],
  setup: { source: 'demo', target: 'lesson-report.raw', options: { sync: 'full', speed: 4 << 20, 'on-source-error': 'report' }, faults: ['source:read:EIO:5M+4K'] },
  prediction: { question: 'What happens at the failing read?', choices: OUTCOMES, answer: FAILS.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: read, action report', event: 'BLOCK_JOB_ERROR', match: { operation: 'read', action: 'report', errno: 'EIO' } },
    ...FAILS_WITH_EIO,
  ],
  checks: [errorsSeen('read', 'report', 1, 'EIO'), endsAs('failed', 'Input/output error')],
  why:
    'QEMU asks block_job_error_action() what to do with each failed request; under report the answer is always "report": the job stops copying and completes with the error (BLOCK_JOB_COMPLETED carries it). What was copied stays in the target; the rest is not there.',
};
