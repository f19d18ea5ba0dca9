import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS, status } from '../lesson.js';
import { endsAs, resumeCopiesLess, targetEqualsSource } from '../checks.js';
import { FAILS, NEVER_READY } from './choices.js';

export const resume: Lesson = {
  id: 'resume',
  title: 'Resume after closing the tab',
  text: 'The job copies at 2 MiB/s and stores a checkpoint (its dirty bitmap) every 2 s. Once a checkpoint holds 3 MiB copied, the lesson kills its worker, as closing the tab would, and resumes the job from that checkpoint.',
  teaches: ['checkpoint', 'dirty bitmap', 'resume'],
  setup: { source: 'demo', target: 'lesson-resume.raw', options: { sync: 'full', speed: 2 << 20 }, faults: [] },
  prediction: {
    question: 'What does the resumed job copy?',
    choices: [
      { id: 'rest', label: 'only what was still dirty: it completes', means: 'a resume copies only what its checkpoint held dirty' },
      { id: 'all', label: 'everything again from the start', means: 'a job starts from the beginning when it has no checkpoint, or when the images changed since it' },
      FAILS,
      NEVER_READY,
    ],
    answer: 'rest',
  },
  expected: [
    ...STARTS.slice(0, 1),
    { ...STARTS[1]!, then: [{ do: 'await-checkpoint', cleanBytes: 3 << 20 }, { do: 'interrupt-and-resume' }] },
    status('created', 'the job is made again from its checkpoint'),
    status('running', 'it runs, with the saved bitmap'),
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [resumeCopiesLess(), endsAs('completed'), targetEqualsSource()],
  why:
    'The job saves its dirty bitmap (a checkpoint) as it goes. A process that dies says nothing more, but the checkpoint and the target survive: a resume checks that neither image changed, loads the bitmap, and copies only the chunks still dirty. QEMU cannot resume a mirror once its process is gone: this resume is diskmirror’s own. (QEMU’s persistent dirty bitmaps, kept in a qcow2, serve incremental backups instead.)',
};
