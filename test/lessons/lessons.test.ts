/**
 * Every lesson, run against the mirror engine under Node as the page runs
 * it: the images it sets up (the demo image, made as the app makes it), its
 * armed faults and guest, the page's checkpoint interval, and its steps
 * carried out by the same runner the page uses (src/lessons/runner.ts); a
 * learner presses Resume a second after the lesson hands a paused job over.
 * Every expected event must be seen in order, every check the lesson makes
 * of its run must hold, and the prediction it calls right must be graded
 * right. A lesson that drifts from the engine fails here.
 */
import { describe, expect, it } from 'vitest';
import { LESSONS } from '../../src/lessons/catalog.js';
import { COMPLETES, type Lesson, type Question, READY_THEN_COMPLETE, STARTS } from '../../src/lessons/lesson.js';
import { type LessonDriver, type LessonReport, LessonRun } from '../../src/lessons/runner.js';
import { dirtyBytesOf } from '../../src/mirror/checkpoint-store.js';
import type { BlockJobInfo } from '../../src/mirror/types.js';
import { verbCall } from '../../src/qapi/verbs.js';
import { DEMO_IMAGE_BYTES, EngineSession, JOB } from '../helpers/lesson-engine.js';

/** How long the learner looks at a paused job before pressing Resume. */
const LEARNER_MS = 1000;

/** Runs a lesson as the page does, with the engine in this process; `prediction` is the learner's pick. */
async function runLesson(lesson: Lesson, prediction = lesson.prediction.answer, pick: (q: Question) => string = (q) => q.answer): Promise<{ report: LessonReport; handedOver: number; resumedByLearner: number; asked: number }> {
  let handedOver = 0;
  let resumedByLearner = 0;
  let asked = 0;
  const started = performance.now();
  let run!: LessonRun;
  const engine = await EngineSession.open(`lesson-${lesson.id}`, lesson.setup, (e) => run.event(e));
  const command = (name: string, args: Record<string, unknown>) => engine.control.execute(name, args);

  const driver: LessonDriver = {
    async act(a) {
      switch (a.do) {
        case 'lift-faults':
          await command('fault-remove', { device: JOB, all: true });
          break;
        case 'add-fault':
          await command('fault-add', { device: JOB, rule: a.rule });
          break;
        case 'source-write':
          await command('x-source-write', { device: JOB, offset: a.offset, bytes: a.bytes, pattern: 0x5a });
          break;
        case 'guest-off':
          await engine.guest?.stop();
          break;
        case 'resume':
        case 'complete':
        case 'cancel':
        case 'force-cancel': {
          const { command: name, args } = verbCall(a.do, JOB);
          await engine.control.execute(name, args);
          break;
        }
        case 'wait':
          await new Promise((r) => setTimeout(r, a.ms));
          break;
        case 'interrupt-and-resume':
          await engine.killAndResume();
          break;
      }
    },
    async query() {
      const info = ((await command('query-block-jobs', {})) as BlockJobInfo[]).find((j) => j.device === JOB);
      return info ? { ioStatus: info['io-status'], len: info.len, offset: info.offset } : null;
    },
    async checkpointClean() {
      const last = engine.saved.at(-1);
      return last ? last.size - dirtyBytesOf(last.bitmap, last.options.granularity, last.size) : null;
    },
    handOver() {
      handedOver++;
      // The learner reads the dialog, then presses Resume.
      setTimeout(() => {
        resumedByLearner++;
        void command('job-resume', { id: JOB });
      }, LEARNER_MS);
    },
    compare: () => engine.sameContent(),
    async ask(q) {
      asked++;
      return pick(q);
    },
  };
  run = new LessonRun(lesson, driver, JOB, DEMO_IMAGE_BYTES, prediction, () => performance.now() - started);
  await engine.start();
  const timeout = setTimeout(() => void run.abandon(), 50_000);
  const report = await run.finished;
  clearTimeout(timeout);
  await engine.close();
  return { report, handedOver, resumedByLearner, asked };
}

const describeReport = (r: LessonReport) => `${r.headline} [${r.checks.map((c) => `${c.holds ? 'ok' : 'NOT'}: ${c.claim} (${c.observed})`).join('; ')}]`;

// The lessons mostly wait on their speed limits: they run side by side.
describe.concurrent('lessons against the engine, at the page’s intervals', () => {
  it('has at least 10 lessons, with unique ids, each answer among its choices, each with checks and every choice saying what would cause it', () => {
    expect(LESSONS.length).toBeGreaterThanOrEqual(10);
    expect(new Set(LESSONS.map((l) => l.id)).size).toBe(LESSONS.length);
    for (const l of LESSONS) {
      expect(l.prediction.choices.map((c) => c.id)).toContain(l.prediction.answer);
      expect(l.checks.length, l.id).toBeGreaterThan(0);
      for (const c of l.prediction.choices) expect(c.means.length, `${l.id}: ${c.id}`).toBeGreaterThan(10);
    }
  });

  for (const lesson of LESSONS) {
    it(`${lesson.id}: every expected event in order, every check of the run holds, the answer graded right`, async () => {
      const { report, handedOver, resumedByLearner, asked } = await runLesson(lesson);
      expect(asked).toBe(lesson.expected.flatMap((x) => x.then ?? []).filter((a) => a.do === 'ask').length);
      const seen = report.facts.statuses.map((s) => s.status).join(' ');
      expect(report.ticked, `ticked ${report.ticked} of ${report.expected}; next: ${lesson.expected[report.ticked]?.label}; seen: ${seen}`).toBe(report.expected);
      expect(report.tone, describeReport(report)).toBe('right');
      for (const c of report.checks) expect(c.holds, `${c.claim}: ${c.observed}`).toBe(true);
      // A lesson that hands the job over leaves it paused until the learner's Resume, and never resumes it itself.
      const handsOver = lesson.expected.some((x) => x.then?.some((a) => a.do === 'await-learner'));
      expect(handedOver).toBe(handsOver ? 1 : 0);
      expect(resumedByLearner).toBe(handedOver);
      if (handsOver) {
        const pause = report.facts.pauses.find((p) => p.byLearner)!;
        expect(pause.ms).toBeGreaterThanOrEqual(LEARNER_MS - 50);
        expect(report.facts.pauses.filter((p) => !p.byLearner)).toEqual([]);
      }
    }, 60_000);
  }

  it('resume: the result names what the resumed job copied, less than the disk', async () => {
    const lesson = LESSONS.find((l) => l.id === 'resume')!;
    const { report } = await runLesson(lesson);
    const resumed = report.facts.runs[1]!;
    expect(resumed.firstLen).toBeLessThanOrEqual(DEMO_IMAGE_BYTES - (3 << 20));
    expect(report.checks.map((c) => c.observed).join(' ')).toMatch(/the resumed job copied [\d.]+ MiB of 8\.00 MiB: the [\d.]+ MiB already clean were not read again/);
  }, 60_000);

  it('a wrong pick is told what would have caused it; a run that does not show the lesson is not graded', async () => {
    const stop = LESSONS.find((l) => l.id === 'stop')!;
    const { report } = await runLesson(stop, 'fails');
    expect(report.tone).toBe('wrong');
    expect(report.headline).toContain('You predicted “the job fails”: failing at the first error is what report does');
    // The same lesson, its fault never placed: the run shows no pause, and says so instead of grading.
    // A wrong answer at the second moment (before Resume) is told what would have caused it.
    const { report: second } = await runLesson(stop, 'pauses', (q) => (q.answer === 'retried' ? 'skipped' : q.answer));
    expect(second.tone).toBe('wrong');
    expect(second.headline).toBe(
      'Your prediction was right: the job pauses until someone resumes it. Then: not this time: it tries the failed range again, which now succeeds, and goes on. You predicted “it goes on past the failed range without copying it”: no policy skips a range: one that failed stays dirty until it is copied.',
    );
    const { report: off } = await runLesson({ ...stop, setup: { ...stop.setup, faults: [] }, expected: [...STARTS, ...READY_THEN_COMPLETE, ...COMPLETES] });
    expect(off.tone).toBe('off');
    expect(off.headline).toMatch(/^This run did not show what the lesson is about: .*the job never paused/);
  }, 60_000);
});
