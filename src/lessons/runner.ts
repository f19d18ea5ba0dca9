/**
 * One run of a lesson, the same in the page and in the Node test: it
 * follows the job's events (LessonTrack), carries out the lesson's steps
 * through a driver when their event comes, records what the run showed
 * (FactRecorder), and at the end checks the lesson's claims before it
 * grades a prediction. Every step waits on an event or a state of the job,
 * never on a guess of how long something takes; where the lesson is about a
 * paused job it stops there and hands the job to the learner.
 */
import type { AnyQmpEvent } from '../qapi/events.js';
import { type CheckResult, runChecks } from './checks.js';
import { FactRecorder, type RunFacts } from './facts.js';
import { type Lesson, type LessonAction, LessonTrack, type Question } from './lesson.js';

/** A saved run is only shown: nothing acts on a job. */
export const SHOWN_ONLY: LessonDriver = {
  act: async () => {},
  query: async () => null,
  checkpointClean: async () => null,
  handOver: () => {},
  compare: async () => null,
  ask: async (q) => q.answer,
};

/** The steps a driver carries out (the others are the runner's own). */
export type DriverAction = Exclude<LessonAction, { do: 'await-checkpoint' } | { do: 'await-learner' } | { do: 'ask' }>;

/** A question asked during the run, and the learner's pick. */
export interface Answer {
  question: Question;
  pick: string;
}

/** What the lesson asks of whoever runs it: the page through its worker and controls, the Node test through the engine. */
export interface LessonDriver {
  /** Carries out one of the lesson's own steps on the job (await-* steps are the runner's). */
  act(action: DriverAction, job: string): Promise<void>;
  /** Asks the learner `question` (a second moment); resolves with the choice's id. */
  ask(question: Question): Promise<string>;
  /** The job's io-status, len and offset as it answers now; null once it is gone. */
  query(job: string): Promise<{ ioStatus: string; len: number; offset: number } | null>;
  /** Bytes the job's last stored checkpoint calls clean; null while it has none. */
  checkpointClean(job: string): Promise<number | null>;
  /** The lesson hands the job over: `says` tells the learner what to do. */
  handOver(job: string, says: string): void;
  /** Whether the target now holds what the source holds (null: cannot tell). */
  compare(): Promise<boolean | null>;
}

export interface LessonReport {
  /** How many expected events were seen, of how many. */
  ticked: number;
  expected: number;
  checks: CheckResult[];
  /** right/wrong: the run showed what the lesson is about and the prediction is graded; off: it did not. */
  tone: 'right' | 'wrong' | 'off';
  headline: string;
  /** The lesson's reason, when the run showed it. */
  why: string;
  facts: RunFacts;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a step that waits on a state asks the job again. */
const POLL_MS = 100;

export class LessonRun {
  readonly track: LessonTrack;
  readonly recorder: FactRecorder;
  private steps = Promise.resolve();
  /** The learner's answers to the questions asked during the run. */
  readonly answers: Answer[] = [];
  private ended = false;
  private finishedResolve!: (r: LessonReport) => void;
  /** Resolves once the job is gone (or the run is given up) and the checks are done. */
  readonly finished: Promise<LessonReport>;

  constructor(
    readonly lesson: Lesson,
    private readonly driver: LessonDriver,
    readonly job: string,
    diskBytes: number,
    private readonly prediction: string,
    now: () => number = () => performance.now(),
  ) {
    this.track = new LessonTrack(lesson);
    this.recorder = new FactRecorder(diskBytes, now, lesson.setup.guest !== undefined);
    this.finished = new Promise((r) => (this.finishedResolve = r));
  }

  /** Every event of the job (others are the caller's to filter out). */
  event(e: AnyQmpEvent): void {
    if (this.ended) return;
    this.recorder.event(e);
    const actions = this.track.observe(e);
    if (e.event === 'JOB_STATUS_CHANGE' && (e.data.status === 'paused' || e.data.status === 'standby')) void this.askIoStatus();
    if (actions.length) this.steps = this.steps.then(() => this.run(actions));
    if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') void this.end();
  }

  /** A progress report of the job (len and offset). */
  progress(len: number, offset: number): void {
    if (!this.ended) this.recorder.progress(len, offset);
  }

  /** The job went away without its last events (the run is given up): check what was seen. */
  abandon(): Promise<LessonReport> {
    void this.end();
    return this.finished;
  }

  private async askIoStatus(): Promise<void> {
    const answer = await this.driver.query(this.job).catch(() => null);
    if (answer) this.recorder.ioStatus(answer.ioStatus);
  }

  private async run(actions: LessonAction[]): Promise<void> {
    for (const a of actions) {
      if (this.ended) return;
      if (a.do === 'await-checkpoint') await this.awaitCheckpoint(a.cleanBytes);
      else if (a.do === 'ask') this.answers.push({ question: a.question, pick: await this.driver.ask(a.question) });
      else if (a.do === 'await-learner') {
        this.recorder.learnerHasTheJob();
        this.driver.handOver(this.job, a.says);
      } else {
        if (a.do === 'lift-faults') this.recorder.lifted();
        if (a.do === 'guest-off') {
          this.recorder.lifted();
          this.recorder.guestStopped();
        }
        await this.driver.act(a, this.job);
      }
    }
  }

  private async awaitCheckpoint(cleanBytes: number): Promise<void> {
    while (!this.ended) {
      const clean = await this.driver.checkpointClean(this.job).catch(() => null);
      if (clean !== null && clean >= cleanBytes) return;
      await sleep(POLL_MS);
    }
  }

  private async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.steps.catch(() => {});
    // Only a completed job promises a target equal to its source.
    if (this.recorder.facts.ending?.kind === 'completed') this.recorder.compared(await this.driver.compare().catch(() => null));
    this.finishedResolve(judge(this.lesson, this.track.ticked, runChecks(this.lesson.checks, this.recorder.facts), [{ question: this.lesson.prediction, pick: this.prediction }, ...this.answers], this.recorder.facts));
  }
}

/** The result of a run: graded only when the run showed what the lesson is about; each answer (the prediction first) graded in turn. */
export function judge(lesson: Lesson, ticked: number, checks: CheckResult[], answers: Answer[], facts: RunFacts): LessonReport {
  const base = { ticked, expected: lesson.expected.length, checks, facts };
  if (ticked < lesson.expected.length) {
    const next = lesson.expected[ticked]!;
    return { ...base, tone: 'off', headline: `The run did not follow the lesson: the job ended before “${next.label}”.`, why: '' };
  }
  const failed = checks.filter((c) => !c.holds);
  if (failed.length) {
    return { ...base, tone: 'off', headline: `This run did not show what the lesson is about: ${failed.map((c) => `${c.claim}, but ${c.observed}`).join('; ')}.`, why: '' };
  }
  const graded = answers.map(({ question, pick }) => {
    const right = question.choices.find((c) => c.id === question.answer)!;
    const picked = question.choices.find((c) => c.id === pick);
    return { right, picked, ok: picked?.id === right.id };
  });
  const sentences = graded.map(({ right, picked, ok }, i) => {
    const then = i === 0 ? '' : 'Then: ';
    if (ok) return i === 0 ? `Your prediction was right: ${right.label}.` : `${then}right again: ${right.label}.`;
    const told = picked ? ` You predicted “${picked.label}”: ${picked.means}.` : '';
    return i === 0 ? `Not this time: ${right.label}.${told}` : `${then}not this time: ${right.label}.${told}`;
  });
  return { ...base, tone: graded.every((g) => g.ok) ? 'right' : 'wrong', headline: sentences.join(' '), why: lesson.why };
}
