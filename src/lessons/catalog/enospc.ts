import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { OUTCOMES, PAUSES } from './choices.js';

export const enospc: Lesson = {
  id: 'enospc',
  title: 'enospc: a full target pauses the job',
  text: 'A target write fails with ENOSPC (no space left) at 5 MiB under on-target-error=enospc. The lesson frees the "space" (lifts the fault) and resumes.',
  teaches: ['on-target-error=enospc', 'ENOSPC', 'io-status nospace'],
  setup: { source: 'demo', target: 'lesson-enospc.raw', options: { sync: 'full', speed: 4 << 20, 'on-target-error': 'enospc' }, faults: ['target:write:ENOSPC:5M+4K'] },
  prediction: { question: 'What happens when the target is full?', choices: OUTCOMES, answer: PAUSES.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: write, ENOSPC, action stop', event: 'BLOCK_JOB_ERROR', match: { operation: 'write', action: 'stop', errno: 'ENOSPC' } },
    status('paused', 'paused, io-status nospace: space is freed and the job resumed', [{ do: 'lift-faults' }, { do: 'resume' }]),
    status('running', 'running again'),
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  why:
    'enospc stops only for ENOSPC: block_job_error_action() answers "stop" when the error is ENOSPC and "report" otherwise. A full disk is a condition a person can fix (free space, grow the volume), so the job waits with io-status nospace instead of failing.',
};
