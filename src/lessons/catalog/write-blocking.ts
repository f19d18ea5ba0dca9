import { COMPLETES, type Lesson, STARTS, status } from '../lesson.js';
import { endsAs, readyWhileGuestWrites, targetEqualsSource } from '../checks.js';
import { COMPLETES_ANYWAY, OUTCOMES } from './choices.js';

export const writeBlocking: Lesson = {
  id: 'write-blocking',
  title: 'A guest faster than the copy (write-blocking mode)',
  text: 'The same guest, 8 MiB/s against a 2 MiB/s copy, but copy-mode=write-blocking. The lesson completes the job while the guest still writes.',
  teaches: ['copy-mode=write-blocking', 'active mirroring', 'convergence'],
  setup: { source: 'demo', target: 'lesson-write-blocking.raw', options: { sync: 'full', speed: 2 << 20, 'copy-mode': 'write-blocking' }, faults: [], guest: 8 << 20 },
  prediction: { question: 'Does the job converge this time?', choices: OUTCOMES, answer: COMPLETES_ANYWAY.id },
  expected: [
    ...STARTS,
    status('ready', 'ready, with the guest still writing'),
    { label: 'BLOCK_JOB_READY: the lesson stops the guest and completes', event: 'BLOCK_JOB_READY', then: [{ do: 'guest-off' }, { do: 'complete' }] },
    ...COMPLETES,
  ],
  checks: [readyWhileGuestWrites(), endsAs('completed'), targetEqualsSource()],
  why:
    'In write-blocking mode (active mirroring) a guest write returns only once it is written to the target too, so it never adds to the dirty bitmap. The bulk copy only has to get through the disk once; the job becomes READY at the copy speed whatever the guest does. The price: the guest waits for the target on every write.',
};
