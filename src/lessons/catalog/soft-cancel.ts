import { type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { endsAs, targetEqualsSource } from '../checks.js';
import { CANCELLED, COMPLETES_ANYWAY, FAILS, PAUSES } from './choices.js';

export const softCancel: Lesson = {
  id: 'soft-cancel',
  title: 'Cancel after READY: a consistent copy, no switch-over',
  text: 'Once the job is READY the lesson presses Cancel (block-job-cancel without force).',
  teaches: ['block-job-cancel', 'READY', 'BLOCK_JOB_COMPLETED'],
  setup: { source: 'demo', target: 'lesson-soft-cancel.raw', options: { sync: 'full', speed: 4 << 20 }, faults: [] },
  prediction: {
    question: 'Which event ends a job cancelled after READY?',
    choices: [{ ...COMPLETES_ANYWAY, label: 'BLOCK_JOB_COMPLETED: it completes, without switching over' }, CANCELLED, FAILS, PAUSES],
    answer: COMPLETES_ANYWAY.id,
  },
  expected: [
    ...STARTS,
    READY_THEN_COMPLETE[0]!,
    { label: 'BLOCK_JOB_READY: the lesson cancels (soft)', event: 'BLOCK_JOB_READY', then: [{ do: 'cancel' }] },
    status('waiting', 'waiting'),
    status('pending', 'pending'),
    { label: 'BLOCK_JOB_COMPLETED, no error', event: 'BLOCK_JOB_COMPLETED', match: { error: null } },
    status('concluded', 'concluded'),
    status('null', 'gone (null)'),
  ],
  checks: [endsAs('completed'), targetEqualsSource()],
  why:
    'After READY, block-job-cancel without force asks the mirror to finish: it copies what is still dirty, then ends without pivoting to the target. The target is a consistent copy of the source at that moment, and QEMU reports BLOCK_JOB_COMPLETED, not BLOCK_JOB_CANCELLED (mirror_cancel() turns a soft cancel after READY into a completion without switch-over).',
};
