import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS } from '../lesson.js';
import { endsAs, lenPassesDisk, noReadyBeforeLift, targetEqualsSource } from '../checks.js';
import { AFTER_LIFT, NEVER_READY, OUTCOMES } from './choices.js';

export const backgroundGuest: Lesson = {
  id: 'background-guest',
  title: 'A guest faster than the copy (background mode)',
  text: 'A guest writes 8 MiB/s to the source while the job copies at 2 MiB/s in the default background mode. After 3 s the lesson stops the guest.',
  teaches: ['copy-mode=background', 'convergence', 'len'],
  setup: { source: 'demo', target: 'lesson-background.raw', options: { sync: 'full', speed: 2 << 20, 'copy-mode': 'background' }, faults: [], guest: 8 << 20 },
  prediction: { question: 'What happens while the guest writes faster than the job copies?', choices: OUTCOMES, answer: NEVER_READY.id },
  expected: [
    ...STARTS.slice(0, 1),
    { ...STARTS[1]!, then: [{ do: 'wait', ms: 3000 }, { do: 'ask', question: AFTER_LIFT('The guest is about to stop writing') }, { do: 'guest-off' }] },
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [noReadyBeforeLift('the guest writes'), lenPassesDisk(), endsAs('completed'), targetEqualsSource()],
  why:
    'In background mode a guest write only marks its chunks dirty; the job copies them later. When the guest dirties chunks faster than the job copies them, the dirty count never reaches zero and the job never becomes READY: it cannot converge. Every rewrite adds to len, which is why len passes the disk size. Once the guest stops, the job catches up.',
};
