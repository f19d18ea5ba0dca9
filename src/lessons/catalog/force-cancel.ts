import { type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { endsAs } from '../checks.js';
import { CANCELLED, COMPLETES_ANYWAY, FAILS, PAUSES } from './choices.js';

export const forceCancel: Lesson = {
  id: 'force-cancel',
  title: 'Force cancel after READY: stop at once',
  text: 'Once the job is READY the lesson presses Force cancel (block-job-cancel with force=true).',
  teaches: ['block-job-cancel force', 'BLOCK_JOB_CANCELLED', 'aborting'],
  setup: { source: 'demo', target: 'lesson-force-cancel.raw', options: { sync: 'full', speed: 4 << 20 }, faults: [] },
  prediction: { question: 'Which event ends a job force-cancelled after READY?', choices: [CANCELLED, COMPLETES_ANYWAY, FAILS, PAUSES], answer: CANCELLED.id },
  expected: [
    ...STARTS,
    READY_THEN_COMPLETE[0]!,
    { label: 'BLOCK_JOB_READY: the lesson force-cancels', event: 'BLOCK_JOB_READY', then: [{ do: 'force-cancel' }] },
    status('aborting', 'aborting'),
    { label: 'BLOCK_JOB_CANCELLED', event: 'BLOCK_JOB_CANCELLED' },
    status('concluded', 'concluded'),
    status('null', 'gone (null)'),
  ],
  checks: [endsAs('cancelled')],
  why:
    'A forced cancel does not wait for anything: the job stops copying, leaves the target as it is, and QEMU reports BLOCK_JOB_CANCELLED. After READY the target was in sync a moment ago, but writes in flight may be cut: it is not guaranteed consistent. Before READY every cancel behaves this way.',
};
