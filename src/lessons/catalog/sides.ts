import { FAILS_WITH_EIO, type Lesson, STARTS } from '../lesson.js';
import { endsAs, errorsSeen } from '../checks.js';
import { FAILS, OUTCOMES } from './choices.js';

export const sides: Lesson = {
  id: 'sides',
  title: 'Source errors and target errors have their own policies',
  text: 'on-source-error is ignore, on-target-error is report (the default). A target write fails at 5 MiB.',
  teaches: ['on-source-error', 'on-target-error', 'BLOCK_JOB_ERROR operation'],
  setup: {
    source: 'demo',
    target: 'lesson-sides.raw',
    options: { sync: 'full', speed: 4 << 20, 'on-source-error': 'ignore', 'on-target-error': 'report' },
    faults: ['target:write:EIO:5M+4K'],
  },
  prediction: { question: 'The source policy is ignore. What does the failing target write do?', choices: OUTCOMES, answer: FAILS.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: write (the target), action report', event: 'BLOCK_JOB_ERROR', match: { operation: 'write', action: 'report' } },
    ...FAILS_WITH_EIO,
  ],
  checks: [errorsSeen('write', 'report', 1), endsAs('failed', 'Input/output error')],
  why:
    'The mirror asks a different policy for each side: a failed read of the source goes to on-source-error, a failed write of the target to on-target-error (mirror_error_action() picks by read or write). BLOCK_JOB_ERROR says which: operation "read" or "write". Here the target policy decides, and it is report.',
};
