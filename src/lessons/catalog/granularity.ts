import { COMPLETES, type Lesson, READY_THEN_COMPLETE, STARTS } from '../lesson.js';
import { endsAs, errorsSeen, noReadyBeforeLift, targetEqualsSource, wholeChunks } from '../checks.js';
import { AFTER_LIFT, NEVER_READY, OUTCOMES } from './choices.js';

const chunkError = { label: 'BLOCK_JOB_ERROR: read, ignore', event: 'BLOCK_JOB_ERROR', match: { operation: 'read', action: 'ignore' } } as const;

export const granularity: Lesson = {
  id: 'granularity',
  title: 'The granularity and the bitmap',
  text: 'granularity=1M: one bit of the dirty bitmap covers 1 MiB. A 4 KiB read fails at 3 MiB under ignore; watch the picture: a whole 1 MiB cell stays dirty. After the second error the lesson lifts the fault.',
  teaches: ['granularity', 'dirty bitmap', 'on-source-error=ignore'],
  setup: {
    source: 'demo',
    target: 'lesson-granularity.raw',
    options: { sync: 'full', speed: 2 << 20, granularity: 1 << 20, 'on-source-error': 'ignore' },
    faults: ['source:read:EIO:3M+4K'],
  },
  prediction: { question: 'How much stays dirty while the 4 KiB read fails?', choices: OUTCOMES.map((c) => (c.id === NEVER_READY.id ? { ...c, label: 'a whole 1 MiB chunk, and the job never reaches READY' } : c)), answer: NEVER_READY.id },
  expected: [
    ...STARTS,
    { ...chunkError },
    { ...chunkError, label: 'again: the whole chunk is retried; the lesson lifts the fault', then: [{ do: 'ask', question: AFTER_LIFT('The lesson is about to lift the fault') }, { do: 'lift-faults' }] },
    ...READY_THEN_COMPLETE,
    ...COMPLETES,
  ],
  checks: [errorsSeen('read', 'ignore', 2), wholeChunks(1 << 20, 4 << 10), noReadyBeforeLift('the read fails'), endsAs('completed'), targetEqualsSource()],
  why:
    'The mirror tracks dirt per chunk of granularity bytes, not per byte: any write or failure inside a chunk makes all of it dirty, and a copy reads and writes whole chunks. A coarse granularity means a smaller bitmap and bigger requests, but more bytes copied again for each small change or error.',
};
