import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { FAILS, NEVER_READY } from './choices.js';

export const resume: Lesson = {
  id: 'resume',
  title: 'Resume after closing the tab',
  text: 'The job copies at 2 MiB/s. After 1.5 s the lesson kills its worker, as closing the tab would, and resumes the job from its checkpoint.',
  teaches: ['checkpoint', 'dirty bitmap', 'resume'],
  setup: { source: 'demo', target: 'lesson-resume.raw', options: { sync: 'full', speed: 2 << 20 }, faults: [] },
  prediction: {
    question: 'What does the resumed job copy?',
    choices: [
      { id: 'rest', label: 'only what was still dirty: it completes' },
      { id: 'all', label: 'everything again from the start' },
      FAILS,
      NEVER_READY,
    ],
    answer: 'rest',
  },
  expected: [
    ...STARTS.slice(0, 1),
    { ...STARTS[1]!, then: [{ do: 'wait', ms: 1500 }, { do: 'interrupt-and-resume' }] },
    status('created', 'the job is made again from its checkpoint'),
    status('running', 'it runs, with the saved bitmap'),
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  why:
    'The job saves its dirty bitmap (a checkpoint) as it goes. A process that dies says nothing more, but the checkpoint and the target survive: a resume checks that neither image changed, loads the bitmap, and copies only the chunks still dirty. QEMU has the same idea in persistent dirty bitmaps.',
};
