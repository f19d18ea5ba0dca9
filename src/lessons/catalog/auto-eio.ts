import { FAILS_WITH_EIO, type Lesson, STARTS } from '../lesson.js';
import { endsAs, errorsSeen } from '../checks.js';
import { FAILS, OUTCOMES } from './choices.js';

export const autoEio: Lesson = {
  id: 'auto-eio',
  title: 'auto and enospc: any other error is reported',
  text: 'A target write fails with EIO at 5 MiB under on-target-error=auto. The same happens under enospc.',
  teaches: ['on-target-error=auto', 'on-target-error=enospc', 'EIO'],
  setup: { source: 'demo', target: 'lesson-auto.raw', options: { sync: 'full', speed: 4 << 20, 'on-target-error': 'auto' }, faults: ['target:write:EIO:5M+4K'] },
  prediction: { question: 'Under auto, a job pauses when the target is full (ENOSPC), as under enospc. What does it do with an EIO?', choices: OUTCOMES, answer: FAILS.id },
  expected: [
    ...STARTS,
    { label: 'BLOCK_JOB_ERROR: write, EIO, action report', event: 'BLOCK_JOB_ERROR', match: { operation: 'write', action: 'report', errno: 'EIO' } },
    ...FAILS_WITH_EIO,
  ],
  checks: [errorsSeen('write', 'report', 1, 'EIO'), endsAs('failed', 'Input/output error')],
  why:
    'For a block job, auto means what enospc means: block_job_error_action() treats BLOCKDEV_ON_ERROR_AUTO and ENOSPC alike, stopping on ENOSPC and reporting anything else. An EIO is not something space can fix, so the job fails.',
};
