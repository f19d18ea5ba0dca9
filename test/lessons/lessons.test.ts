/**
 * Every lesson, run against the mirror engine under Node: the images it
 * sets up (the demo image, made as the app makes it), its armed faults and
 * guest, and its actions as QMP commands; every expected event must be seen
 * in order, and the prediction the lesson calls right must be what
 * happened. A lesson that drifts from the engine fails here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NodeFileStore } from '../../src/block/node-store.js';
import { createInStore, openChain, type OpenedImage } from '../../src/format/image-access.js';
import { LESSONS } from '../../src/lessons/catalog.js';
import { type Lesson, type LessonAction, LessonTrack } from '../../src/lessons/lesson.js';
import { MirrorControl } from '../../src/mirror/control.js';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import { parseFaultSpec } from '../../src/qapi/faults.js';
import { verbCall } from '../../src/qapi/verbs.js';
import { launchMirror } from '../../src/mirror/launch.js';
import type { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { DEMO_IMAGE_BYTES, writeDemoImage } from '../../src/worker/demo.js';
import { SimulatedGuest } from '../../src/worker/guest.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const JOB = 'lesson0';

interface Run {
  events: AnyQmpEvent[];
  /** How many events had come when the lesson lifted its faults or stopped its guest (-1: never). */
  liftedAt: number;
  track: LessonTrack;
  outcome: string;
}

async function makeDemo(store: NodeFileStore): Promise<void> {
  const made = await createInStore(store, 'demo.raw', { format: 'raw', size: DEMO_IMAGE_BYTES }, { replace: false });
  await writeDemoImage(made.image);
  await made.image.flush();
  await made.publish();
  await made.image.close();
}

/** Runs a lesson as the page does, with the engine in this process. */
async function runLesson(lesson: Lesson): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), `diskmirror-lesson-${lesson.id}-`));
  dirs.push(dir);
  const store = new NodeFileStore(dir);
  await makeDemo(store);
  const track = new LessonTrack(lesson);
  const events: AnyQmpEvent[] = [];
  const saved: Checkpoint[] = [];
  const source: OpenedImage = await openChain(store, 'demo.raw', { readOnly: false });
  let control = new MirrorControl();
  let job: MirrorJob;
  let target: OpenedImage;
  let guest = null as SimulatedGuest | null;
  let ended!: (outcome: string) => void;
  const end = new Promise<string>((resolve) => (ended = resolve));
  let queue = Promise.resolve();
  let liftedAt = -1;

  const start = async (resumeFrom?: Checkpoint) => {
    const launched = await launchMirror({
      store,
      source: { image: source.image, name: 'demo.raw', opened: source },
      target: lesson.setup.target,
      ...(lesson.setup.targetFormat ? { targetFormat: lesson.setup.targetFormat } : {}),
      options: { ...lesson.setup.options, id: JOB },
      backingName: (b) => b,
      faults: resumeFrom ? [] : lesson.setup.faults.map(parseFaultSpec),
      checkpointer: () => ({ save: async (c) => void saved.push(structuredClone(c)), markSourceWriting: async () => {}, remove: async () => {} }),
      checkpointIntervalSeconds: 0.25,
      onExisting: async () => (resumeFrom ? { options: { ...lesson.setup.options, id: JOB }, resume: { bitmap: resumeFrom.bitmap } } : null),
    });
    job = launched.job;
    target = launched.target;
    control = new MirrorControl();
    control.add(job, launched.faults);
    const thisJob = job;
    job.on((e) => {
      if (thisJob !== job) return;
      events.push(e);
      const actions = track.observe(e);
      if (actions.length) queue = queue.then(() => act(actions));
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') void thisJob.result.then((r) => ended(r.outcome));
    }, { replay: true });
    job.start();
    if (lesson.setup.guest && !resumeFrom) {
      guest = new SimulatedGuest(job, lesson.setup.guest);
      guest.start();
    }
  };

  const act = async (actions: LessonAction[]) => {
    for (const a of actions) {
      switch (a.do) {
        case 'lift-faults':
          liftedAt = events.length;
          await control.execute('fault-remove', { device: JOB, all: true });
          break;
        case 'add-fault':
          await control.execute('fault-add', { device: JOB, rule: a.rule });
          break;
        case 'source-write':
          await control.execute('x-source-write', { device: JOB, offset: a.offset, bytes: a.bytes, pattern: 0x5a });
          break;
        case 'guest-off':
          liftedAt = events.length;
          await guest?.stop();
          break;
        case 'resume':
        case 'complete':
        case 'cancel':
        case 'force-cancel': {
          const { command, args } = verbCall(a.do, JOB);
          await control.execute(command, args);
          break;
        }
        case 'wait':
          await new Promise((r) => setTimeout(r, a.ms));
          break;
        case 'interrupt-and-resume': {
          // The process stops issuing I/O and is gone; the target survives with the last checkpoint.
          await guest?.stop();
          await job.halt();
          await target.image.close();
          const last = saved.at(-1)!;
          await start(last);
          break;
        }
      }
    }
  };

  await start();
  const outcome = await Promise.race([end, new Promise<string>((r) => setTimeout(() => r('timeout'), 40_000))]);
  await queue;
  await guest?.stop();
  await source.image.close().catch(() => {});
  return { events, liftedAt, track, outcome };
}

/** What the prediction's choices say, as the outcome a run shows. */
function happened(run: Run): string {
  const completed = run.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED') as { data: { error?: string } } | undefined;
  const errors = run.events.filter((e) => e.event === 'BLOCK_JOB_ERROR') as { data: { action: string } }[];
  if (run.events.some((e) => e.event === 'BLOCK_JOB_CANCELLED')) return 'cancelled';
  if (completed?.data.error) return 'fails';
  if (errors.some((e) => e.data.action === 'stop')) return 'pauses';
  return 'completes';
}

// The lessons mostly wait on their speed limits: they run side by side.
describe.concurrent('lessons against the engine', () => {
  it('has at least 10 lessons, with unique ids, each answer among its choices', () => {
    expect(LESSONS.length).toBeGreaterThanOrEqual(10);
    expect(new Set(LESSONS.map((l) => l.id)).size).toBe(LESSONS.length);
    for (const l of LESSONS) expect(l.prediction.choices.map((c) => c.id)).toContain(l.prediction.answer);
  });

  for (const lesson of LESSONS) {
    it(`${lesson.id}: every expected event, in order`, async () => {
      const run = await runLesson(lesson);
      const seen = run.events.map((e) => (e.event === 'JOB_STATUS_CHANGE' ? e.data.status : e.event)).join(' ');
      expect(run.track.ticked, `ticked ${run.track.ticked} of ${lesson.expected.length}; next: ${lesson.expected[run.track.ticked]?.label}; seen: ${seen}`).toBe(lesson.expected.length);
      expect(run.outcome).not.toBe('timeout');
      // The lesson's answer is what the events show (never-ready and the resume's answer are about the way there).
      const shown = happened(run);
      const answer = lesson.prediction.answer;
      if (answer === 'fails' || answer === 'pauses' || answer === 'cancelled') expect(shown).toBe(answer);
      else expect(shown === 'completes' || shown === 'pauses').toBe(true);
      if (answer === 'never-ready') {
        // No READY before the lesson lifted the fault or stopped the guest: the first BLOCK_JOB_READY comes after.
        const firstReady = run.events.findIndex((e) => e.event === 'BLOCK_JOB_READY');
        const ignored = run.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').length;
        expect(run.liftedAt).toBeGreaterThan(0);
        expect(firstReady).toBeGreaterThanOrEqual(run.liftedAt);
        if (lesson.setup.faults.length) expect(ignored).toBeGreaterThanOrEqual(2);
      }
    }, 60_000);
  }
});
