/**
 * The Lessons section: a link per lesson (deep link #lesson/ID), and the
 * open lesson: its text and the QEMU names it teaches, Set up (the demo
 * image, the mirror form, armed faults and guest), Your prediction, Run
 * lesson (Start mirror, then the lesson's steps as their events come), the
 * expected events revealed as they are observed (never before Run), a line
 * that hands a paused job to the learner, and the Lesson result: the run's
 * own figures, graded only when the run showed what the lesson is about.
 * The lessons are data (src/lessons) and one runner carries them out, here
 * and in the Node test; this module only drives it through the page's own
 * controls, so a lesson does what a person could.
 */
import { LESSONS, lessonById } from '../lessons/catalog.js';
import type { Lesson } from '../lessons/lesson.js';
import { RecordError, type RunRecord, RunHistory, decodeRecord } from '../lessons/record.js';
import { type DriverAction, type LessonDriver, type LessonReport, LessonRun, SHOWN_ONLY } from '../lessons/runner.js';
import type { AnyQmpEvent } from '../qapi/events.js';
import { isPageVerb, verbCall } from '../qapi/verbs.js';
import type { BlockJobInfo, CellState } from '../mirror/types.js';
import { byId, h } from './dom.js';
import { run as send, worker } from './bridge.js';
import { eventJob } from './job-store.js';
import { LessonAsk } from './lesson-ask.js';
import { LessonReplay } from './lesson-replay.js';
import { explain } from './messages.js';

export interface LessonHooks {
  /** Makes the images, fills the mirror form, arms the faults and the guest; answers the source's size. */
  setUp(lesson: Lesson): Promise<{ diskBytes: number }>;
  /** Presses Start mirror: the job's id, or null if it was refused. */
  start(): Promise<string | null>;
  liftFaults(): Promise<void>;
  guestOff(): Promise<void>;
  /** Kills the worker as a closed tab would, then resumes the job from its checkpoint. */
  interruptAndResume(id: string): Promise<void>;
  /** The lesson hands job `id` over to the learner: its stop dialog may show now. */
  handOver(id: string): void;
  /** Resolves once job `id` let go of its images. */
  released(id: string): Promise<void>;
}

type Phase = 'idle' | 'ready' | 'running' | 'done';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


export class LessonsSection {
  private lesson: Lesson | null = null;
  private run: LessonRun | null = null;
  private phase: Phase = 'idle';
  private diskBytes = 0;
  /** Events that came while Start mirror was on its way (the job's id not known yet). */
  private early: AnyQmpEvent[] | null = null;
  /** What the run showed, kept for the timeline and its link. */
  private history: RunHistory | null = null;
  private readonly replay = new LessonReplay();
  private readonly asking = new LessonAsk();

  constructor(private readonly hooks: LessonHooks) {
    byId('lesson-list').replaceChildren(...LESSONS.map((l) => h('li', {}, h('a', { href: `#lesson/${l.id}` }, l.title))));
    byId('lesson-setup').addEventListener('click', () => void this.setUp());
    byId('lesson-run').addEventListener('click', () => void this.start());
    window.addEventListener('hashchange', () => this.fromHash(true));
  }

  /** Opens the lesson the address names, if any; an unknown one says so. */
  fromHash(scroll = false): void {
    const saved = /^#run\/(.*)$/.exec(location.hash);
    if (saved) return this.openRecord(saved[1]!);
    const m = /^#lesson\/(.*)$/.exec(location.hash);
    if (!m) return;
    const id = decodeURIComponent(m[1]!);
    const lesson = lessonById(id);
    byId('lessons-error').textContent = '';
    if (!lesson) {
      byId('lessons-error').textContent = `There is no lesson "${id}". The lessons are: ${LESSONS.map((l) => l.id).join(', ')}.`;
      byId('lessons-section').scrollIntoView({ block: 'start' });
      return;
    }
    if (lesson === this.lesson) return;
    if (this.phase === 'running') {
      if (!confirm(`The lesson "${this.lesson?.title}" is still running. Leave it (the job goes on in the Job panel) and open "${lesson.title}"?`)) {
        history.replaceState(null, '', `#lesson/${this.lesson!.id}`);
        return;
      }
      // The job goes on without the lesson: a stop it held back is shown.
      if (this.run) this.hooks.handOver(this.run.job);
      this.run = null;
    }
    this.open(lesson);
    if (scroll) byId('lesson').scrollIntoView({ block: 'start' });
  }

  private open(lesson: Lesson): void {
    this.lesson = lesson;
    this.run = null;
    this.history = null;
    this.replay.open(null);
    this.asking.close();
    this.phase = 'idle';
    byId('lesson').hidden = false;
    byId('lesson-title').textContent = lesson.title;
    byId('lesson-text').textContent = lesson.text;
    byId('lesson-teaches').replaceChildren('Teaches: ', ...lesson.teaches.flatMap((t, i) => [i ? ', ' : '', h('code', {}, t)]));
    byId('lesson-question').textContent = lesson.prediction.question;
    byId('lesson-choices').replaceChildren(
      ...lesson.prediction.choices.map((c) =>
        h('label', { class: 'check' }, h('input', { type: 'radio', name: 'lesson-prediction', value: c.id, onchange: () => this.buttons() }), c.label),
      ),
    );
    this.renderExpected();
    this.handOver('');
    this.result(null);
    this.say('');
    this.buttons();
    for (const a of byId('lesson-list').querySelectorAll('a')) a.toggleAttribute('aria-current', a.getAttribute('href') === `#lesson/${lesson.id}`);
  }

  private prediction(): string | null {
    return byId('lesson-choices').querySelector<HTMLInputElement>('input:checked')?.value ?? null;
  }

  private buttons(): void {
    byId<HTMLButtonElement>('lesson-setup').disabled = this.phase === 'running';
    byId<HTMLButtonElement>('lesson-run').disabled = this.phase !== 'ready' || this.prediction() === null;
    for (const input of byId('lesson-choices').querySelectorAll('input')) input.disabled = this.phase === 'running';
    byId('lesson-run-hint').textContent =
      this.phase === 'idle' ? (byId('lesson-result').textContent ? 'Set up again to run it once more.' : 'Set up first.') : this.phase === 'ready' && this.prediction() === null ? 'Choose your prediction first.' : this.phase === 'running' ? 'Running…' : '';
  }

  private say(text: string): void {
    byId('lesson-error').textContent = text;
  }

  private handOver(text: string): void {
    const line = byId('lesson-handover');
    line.textContent = text;
    line.hidden = text === '';
  }

  private result(report: LessonReport | null, text = ''): void {
    const box = byId('lesson-result');
    box.className = `lesson-result ${report?.tone ?? ''}`;
    if (!report) {
      box.replaceChildren(...(text ? [h('strong', {}, text)] : []));
      return;
    }
    box.replaceChildren(
      h('strong', {}, report.headline),
      h('ul', { class: 'figures', 'aria-label': 'What the run showed' }, ...report.checks.map((c) => h('li', {}, `${c.holds ? '✓' : '✗'} ${c.observed}`))),
      ...(report.why ? [h('p', {}, report.why)] : []),
    );
  }

  /**
   * The expected events: placeholders until Run (the answer is not shown
   * before the question), then each revealed as it is observed; at the end
   * those never seen are shown as such.
   */
  private renderExpected(): void {
    const lesson = this.lesson;
    if (!lesson) return;
    const run = this.run;
    const seen = run?.track.ticked ?? 0;
    const over = this.phase === 'done';
    byId('lesson-expected').replaceChildren(
      ...lesson.expected.map((x, i) => {
        if (i >= seen && !over) return h('li', { 'aria-label': `not yet: event ${i + 1}` }, h('span', { class: 'tick', 'aria-hidden': 'true' }, '○'), ' ', h('span', { class: 'muted' }, run ? '…' : 'shown as the run goes'));
        const name = x.event === 'JOB_STATUS_CHANGE' ? `JOB_STATUS_CHANGE ${x.status}` : x.event;
        // A label that only says the event's name again is not repeated ("BLOCK_JOB_READY — BLOCK_JOB_READY").
        const said = x.label.startsWith(x.event) ? x.label.slice(x.event.length).replace(/^:\s*/, '') : x.label;
        const state = i < seen ? 'seen' : 'not seen';
        return h('li', { class: i < seen ? 'seen' : '', 'aria-label': `${state}: ${x.label}` }, h('span', { class: 'tick', 'aria-hidden': 'true' }, i < seen ? '✓' : '✗'), ' ', h('code', {}, name), ...(said && said !== x.status ? [' — ', said] : []));
      }),
    );
  }

  private async setUp(): Promise<void> {
    const lesson = this.lesson;
    if (!lesson) return;
    this.say('');
    this.result(null);
    this.handOver('');
    this.run = null;
    this.phase = 'idle';
    this.renderExpected();
    try {
      this.diskBytes = (await this.hooks.setUp(lesson)).diskBytes;
      this.phase = 'ready';
    } catch (err) {
      this.say(explain(err, { image: lesson.setup.target }));
    }
    this.buttons();
  }

  private async start(): Promise<void> {
    const lesson = this.lesson;
    const prediction = this.prediction();
    if (!lesson || this.phase !== 'ready' || !prediction) return;
    this.phase = 'running';
    this.buttons();
    this.result(null, 'Running…');
    this.early = [];
    const id = await this.hooks.start();
    const early = this.early;
    this.early = null;
    if (!id) {
      this.phase = 'idle';
      this.result(null, 'The job did not start: see the Mirror section. Set up again.');
      this.buttons();
      return;
    }
    const run = new LessonRun(lesson, this.driver(), id, this.diskBytes, prediction);
    this.run = run;
    this.history = new RunHistory(lesson.id, prediction, this.diskBytes);
    this.replay.open(this.history.record);
    this.replay.finished(false);
    this.renderExpected();
    for (const e of early) this.onEvent(e);
    const report = await run.finished;
    if (this.run !== run) return;
    this.phase = 'done';
    this.handOver('');
    this.renderExpected();
    this.result(report);
    if (this.history) {
      this.history.record.result = { tone: report.tone, headline: report.headline, checks: report.checks };
      this.replay.finished(true);
    }
    // Set up again to run it once more.
    this.phase = 'idle';
    this.buttons();
  }

  private driver(): LessonDriver {
    const hooks = this.hooks;
    return {
      act: (a, id) => this.act(a, id),
      query: async (id) => {
        const info = (await worker().execute('query-block-jobs', {})).find((j) => j.device === id);
        return info ? { ioStatus: info['io-status'], len: info.len, offset: info.offset } : null;
      },
      checkpointClean: (id) => worker().checkpointClean(id),
      handOver: (id, says) => {
        this.handOver(`Your turn: ${says}`);
        hooks.handOver(id);
      },
      ask: (q) => this.asking.ask(q),
      compare: async () => {
        const lesson = this.lesson!;
        await hooks.released(this.run!.job);
        return worker().sameContent('demo.raw', lesson.setup.target);
      },
    };
  }

  /** Whether a running lesson drives job `id` (its stops are shown when the lesson hands the job over). */
  owns(id: string): boolean {
    // While Start mirror is on its way the job's id is not known: its stops wait too.
    return this.phase === 'running' && (this.early !== null || this.run?.job === id);
  }

  /** Every event of the page: the lesson's job's ones go to its run. */
  onEvent(e: AnyQmpEvent): void {
    if (this.early) {
      this.early.push(e);
      return;
    }
    const run = this.run;
    if (this.phase !== 'running' || !run) return;
    if (eventJob(e) !== run.job) return;
    // The job left the pause the lesson handed over: the learner acted.
    if (e.event === 'JOB_STATUS_CHANGE' && e.data.status !== 'paused' && e.data.status !== 'standby') this.handOver('');
    run.event(e);
    this.renderExpected();
    const history = this.history;
    if (history) {
      const at = performance.now();
      history.event(at, e);
      const last = history.record.frames.at(-1);
      if (e.event === 'JOB_STATUS_CHANGE') history.frame({ atMs: at, status: e.data.status, ioStatus: e.data.status === 'running' ? 'ok' : (last?.ioStatus ?? 'ok'), len: last?.len ?? 0, offset: last?.offset ?? 0, cells: last?.cells ?? '' });
      this.replay.update();
    }
  }

  /** A progress report of a job: the lesson's job's len and offset, and a frame of its timeline. */
  onProgress(info: BlockJobInfo, cells: readonly CellState[]): void {
    if (this.phase !== 'running' || this.run?.job !== info.device) return;
    this.run.progress(info.len, info.offset);
    const history = this.history;
    if (!history) return;
    const picture = cells.length ? cells.map((c) => c[0]).join('') : (history.record.frames.at(-1)?.cells ?? '');
    history.frame({ atMs: performance.now(), status: info.status, ioStatus: info['io-status'], len: info.len, offset: info.offset, cells: picture });
    this.replay.update();
  }

  /** Shows a saved run (#run/CODE): its lesson, the prediction, the events seen, the result and the timeline; nothing runs. */
  private openRecord(code: string): void {
    let record: RunRecord;
    try {
      record = decodeRecord(code);
    } catch (err) {
      byId('lessons-error').textContent = err instanceof RecordError ? `${err.message}.` : explain(err);
      return;
    }
    if (this.phase === 'running') return;
    byId('lessons-error').textContent = '';
    const lesson = lessonById(record.lesson)!;
    this.open(lesson);
    const run = new LessonRun(lesson, SHOWN_ONLY, 'saved', record.diskBytes, record.prediction);
    for (const { event } of record.events) run.track.observe(event);
    this.run = run;
    this.phase = 'done';
    for (const input of byId('lesson-choices').querySelectorAll<HTMLInputElement>('input')) input.checked = input.value === record.prediction;
    this.renderExpected();
    if (record.result) {
      const { tone, headline, checks } = record.result;
      this.result({ tone, headline, checks, why: tone === 'off' ? '' : lesson.why, ticked: run.track.ticked, expected: lesson.expected.length, facts: run.recorder.facts });
    }
    this.history = null;
    this.replay.open(record);
    this.replay.finished(true);
    this.phase = 'idle';
    this.buttons();
    byId('lesson-run-hint').textContent = 'A saved run: Set up to run it yourself.';
    byId('lesson').scrollIntoView({ block: 'start' });
  }

  private async act(a: DriverAction, id: string): Promise<void> {
    try {
      if (a.do === 'lift-faults') await this.hooks.liftFaults();
      else if (a.do === 'add-fault') await worker().execute('fault-add', { device: id, rule: a.rule });
      else if (a.do === 'source-write') await worker().execute('x-source-write', { device: id, offset: a.offset, bytes: a.bytes, pattern: 0x5a });
      else if (a.do === 'guest-off') await this.hooks.guestOff();
      else if (isPageVerb(a.do)) await send(verbCall(a.do, id));
      else if (a.do === 'wait') await sleep(a.ms);
      else if (a.do === 'interrupt-and-resume') await this.hooks.interruptAndResume(id);
    } catch (err) {
      this.say(`The lesson could not act: ${explain(err)}`);
    }
  }
}
