/**
 * The Lessons section: a link per lesson (deep link #lesson/ID), and the
 * open lesson: its text and the QEMU names it teaches, Set up (the demo
 * image, the mirror form, armed faults and guest), Your prediction, Run
 * lesson (Start mirror, then the lesson's actions as its expected events
 * are seen), the expected events ticked as they come, and the Lesson
 * result. The lessons are data (src/lessons); this module only runs them
 * through the page's own controls, so a lesson does what a person could.
 */
import { LESSONS, lessonById } from '../lessons/catalog.js';
import { type Lesson, type LessonAction, LessonTrack } from '../lessons/lesson.js';
import type { AnyQmpEvent } from '../qapi/events.js';
import { isPageVerb, verbCall } from '../qapi/verbs.js';
import { run, worker } from './bridge.js';
import { byId, h } from './dom.js';
import { eventJob } from './job-store.js';
import { explain } from './messages.js';

export interface LessonHooks {
  /** Makes the images, fills the mirror form, arms the faults and the guest. */
  setUp(lesson: Lesson): Promise<void>;
  /** Presses Start mirror: the job's id, or null if it was refused. */
  start(): Promise<string | null>;
  liftFaults(): Promise<void>;
  guestOff(): Promise<void>;
  /** Kills the worker as a closed tab would, then resumes the job from its checkpoint. */
  interruptAndResume(id: string): Promise<void>;
}

type Phase = 'idle' | 'ready' | 'running' | 'done';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LessonsSection {
  private lesson: Lesson | null = null;
  private track: LessonTrack | null = null;
  private phase: Phase = 'idle';
  private job: string | null = null;
  /** Events that came while Start mirror was on its way (the job's id not known yet). */
  private early: AnyQmpEvent[] | null = null;
  private actions = Promise.resolve();

  constructor(private readonly hooks: LessonHooks) {
    byId('lesson-list').replaceChildren(...LESSONS.map((l) => h('li', {}, h('a', { href: `#lesson/${l.id}` }, l.title))));
    byId('lesson-setup').addEventListener('click', () => void this.setUp());
    byId('lesson-run').addEventListener('click', () => void this.run());
    window.addEventListener('hashchange', () => this.fromHash(true));
  }

  /** Opens the lesson the address names, if any. */
  fromHash(scroll = false): void {
    const m = /^#lesson\/([\w-]+)$/.exec(location.hash);
    if (!m) return;
    const lesson = lessonById(m[1]!);
    if (!lesson || lesson === this.lesson) return;
    if (this.phase === 'running') {
      this.say(`The lesson "${this.lesson?.title}" is still running: wait until it ends.`);
      return;
    }
    this.open(lesson);
    if (scroll) byId('lesson').scrollIntoView({ block: 'start' });
  }

  private open(lesson: Lesson): void {
    this.lesson = lesson;
    this.track = null;
    this.job = null;
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
    this.result('', '');
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
    byId('lesson-run-hint').textContent =
      this.phase === 'idle' ? (byId('lesson-result').textContent ? 'Set up again to run it once more.' : 'Set up first.') : this.phase === 'ready' && this.prediction() === null ? 'Choose your prediction first.' : this.phase === 'running' ? 'Running…' : '';
  }

  private say(text: string): void {
    byId('lesson-error').textContent = text;
  }

  private result(tone: '' | 'right' | 'wrong' | 'off', text: string, why = ''): void {
    const box = byId('lesson-result');
    box.className = `lesson-result ${tone}`;
    box.replaceChildren(...(text ? [h('strong', {}, text)] : []), ...(why ? [' ', why] : []));
  }

  private renderExpected(): void {
    const lesson = this.lesson;
    if (!lesson) return;
    const seen = this.track?.ticked ?? 0;
    byId('lesson-expected').replaceChildren(
      ...lesson.expected.map((x, i) => {
        const name = x.event === 'JOB_STATUS_CHANGE' ? `JOB_STATUS_CHANGE ${x.status}` : x.event;
        return h('li', { class: i < seen ? 'seen' : '', 'aria-label': `${i < seen ? 'seen' : 'not yet'}: ${x.label}` }, h('span', { class: 'tick', 'aria-hidden': 'true' }, i < seen ? '✓' : '○'), ' ', h('code', {}, name), ' — ', x.label);
      }),
    );
  }

  private async setUp(): Promise<void> {
    const lesson = this.lesson;
    if (!lesson) return;
    this.say('');
    this.result('', '');
    this.track = null;
    this.renderExpected();
    try {
      await this.hooks.setUp(lesson);
      this.phase = 'ready';
      this.say('');
    } catch (err) {
      this.phase = 'idle';
      this.say(explain(err, { image: lesson.setup.target }));
    }
    this.buttons();
  }

  private async run(): Promise<void> {
    const lesson = this.lesson;
    if (!lesson || this.phase !== 'ready' || !this.prediction()) return;
    this.phase = 'running';
    this.buttons();
    this.track = new LessonTrack(lesson);
    this.renderExpected();
    this.result('', 'Running…');
    this.early = [];
    const id = await this.hooks.start();
    const early = this.early;
    this.early = null;
    if (!id) {
      this.phase = 'idle';
      this.result('off', 'The job did not start: see the Mirror section. Set up again.');
      this.buttons();
      return;
    }
    this.job = id;
    for (const e of early) this.onEvent(e);
  }

  /** Every event of the page: the lesson's job's ones tick its list and trigger its actions. */
  onEvent(e: AnyQmpEvent): void {
    if (this.early) {
      this.early.push(e);
      return;
    }
    const track = this.track;
    if (this.phase !== 'running' || !track || !this.job) return;
    if (eventJob(e) !== this.job) return;
    const actions = track.observe(e);
    this.renderExpected();
    if (actions.length) this.actions = this.actions.then(() => this.act(actions));
    if (track.done) this.finish();
    else if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') this.finish();
  }

  private async act(actions: LessonAction[]): Promise<void> {
    const id = this.job!;
    try {
      for (const a of actions) {
        if (a.do === 'lift-faults') await this.hooks.liftFaults();
        else if (a.do === 'add-fault') await worker().execute('fault-add', { device: id, rule: a.rule });
        else if (a.do === 'source-write') await worker().execute('x-source-write', { device: id, offset: a.offset, bytes: a.bytes, pattern: 0x5a });
        else if (a.do === 'guest-off') await this.hooks.guestOff();
        else if (isPageVerb(a.do)) await run(verbCall(a.do, id));
        else if (a.do === 'wait') await sleep(a.ms);
        else if (a.do === 'interrupt-and-resume') await this.hooks.interruptAndResume(id);
      }
    } catch (err) {
      this.say(`The lesson could not act: ${explain(err)}`);
    }
  }

  private finish(): void {
    const lesson = this.lesson!;
    const track = this.track!;
    this.phase = 'done';
    this.buttons();
    const chosen = this.prediction();
    const answer = lesson.prediction.choices.find((c) => c.id === lesson.prediction.answer)!;
    if (!track.done) {
      const next = lesson.expected[track.ticked]!;
      this.result('off', `The run did not follow the lesson: the job ended before “${next.label}”.`, 'Set up and run it again; if it happens again, the engine and the lesson disagree.');
      return;
    }
    const right = chosen === answer.id;
    this.result(
      right ? 'right' : 'wrong',
      right ? `Your prediction was right: ${answer.label}.` : `Not this time: ${answer.label} (you predicted: ${lesson.prediction.choices.find((c) => c.id === chosen)?.label ?? 'nothing'}).`,
      lesson.why,
    );
    // Set up again to run it once more.
    this.phase = 'idle';
    this.buttons();
  }
}
