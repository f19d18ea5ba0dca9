import { COMPLETES, type Lesson, STARTS, status } from '../lesson.js';
import { endsAs, errorsSeen, staysPaused, targetEqualsSource } from '../checks.js';
import { AT_RESUME, OUTCOMES, PAUSES } from './choices.js';

export const afterReady: Lesson = {
  id: 'after-ready',
  title: 'An error after READY',
  text: 'The copy is in sync (READY). Then a guest writes 64 KiB at 1 MiB, and copying it to the target fails: on-target-error=stop.',
  teaches: ['READY', 'standby', 'on-target-error=stop'],
  setup: { source: 'demo', target: 'lesson-after-ready.raw', options: { sync: 'full', speed: 4 << 20, 'on-target-error': 'stop' }, faults: [] },
  prediction: { question: 'The job is READY when the write fails. What happens?', choices: OUTCOMES, answer: PAUSES.id },
  expected: [
    ...STARTS,
    status('ready', 'ready: in sync'),
    {
      label: 'BLOCK_JOB_READY: the lesson arms a target fault and a guest writes',
      event: 'BLOCK_JOB_READY',
      then: [
        { do: 'add-fault', rule: 'target:write:EIO:1M+64K' },
        { do: 'source-write', offset: 1 << 20, bytes: 64 << 10 },
      ],
    },
    { label: 'BLOCK_JOB_ERROR: write, action stop', event: 'BLOCK_JOB_ERROR', match: { operation: 'write', action: 'stop' } },
    status('standby', 'standby: paused while READY; the lesson lifts the fault, and you press Resume', [
      { do: 'lift-faults' },
      { do: 'ask', question: AT_RESUME },
      { do: 'await-learner', says: 'The job was READY and is now in standby with io-status failed; the lesson lifted the fault. Press Resume (in the dialog or the Job panel): the guest\'s write is copied again.' },
    ]),
    status('ready', 'ready again, then Complete', [{ do: 'complete' }]),
    ...COMPLETES,
  ],
  checks: [errorsSeen('write', 'stop', 1), staysPaused('standby', 'failed'), endsAs('completed'), targetEqualsSource()],
  why:
    'READY does not end the job: it keeps copying what the guest writes, and those copies meet the same policies. A job paused while READY is in standby rather than paused (QEMU keeps the two apart); Resume takes it back to ready, and the range the guest wrote is copied again.',
};
