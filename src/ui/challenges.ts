/**
 * The Challenges section: a goal and a limit each (lessons/challenges.ts).
 * Set up makes the demo image, fills the mirror form and arms the faults or
 * the guest as the challenge leaves them; the learner changes what they
 * like, presses Start mirror and drives the job themselves. The attempt
 * counts the commands sent to that job and judges the goal on the job's
 * own events once it has ended, the images compared by the worker.
 */
import { CHALLENGES, type Challenge, ChallengeAttempt, challengeById } from '../lessons/challenges.js';
import type { LessonSetup } from '../lessons/lesson.js';
import type { AnyQmpEvent } from '../qapi/events.js';
import type { JobProgress } from '../worker/api-types.js';
import { onCommand, worker } from './bridge.js';
import { byId, h } from './dom.js';
import { eventJob } from './job-store.js';
import { explain } from './messages.js';

export interface ChallengeHooks {
  /** Makes the demo image, fills the mirror form, arms the faults and the guest; answers the source's size. */
  setUp(setup: LessonSetup): Promise<{ diskBytes: number }>;
  /** Resolves once job `id` let go of its images. */
  released(id: string): Promise<void>;
}

export class ChallengesSection {
  private challenge: Challenge | null = null;
  private diskBytes = 0;
  /** Set up, waiting for the learner's Start mirror. */
  private waiting = false;
  private attempt: { job: string; tried: ChallengeAttempt } | null = null;

  constructor(private readonly hooks: ChallengeHooks) {
    byId('challenge-list').replaceChildren(
      ...CHALLENGES.map((c) => h('li', {}, h('button', { type: 'button', class: 'link', onclick: () => this.open(c.id) }, c.title))),
    );
    byId('challenge-setup').addEventListener('click', () => void this.setUp());
    onCommand((job) => {
      if (this.attempt?.job === job) {
        this.attempt.tried.command();
        this.say();
      }
    });
  }

  private open(id: string): void {
    const challenge = challengeById(id)!;
    this.challenge = challenge;
    this.attempt = null;
    this.waiting = false;
    byId('challenge').hidden = false;
    byId('challenge-title').textContent = challenge.title;
    byId('challenge-goal').textContent = challenge.goal;
    this.result('', '');
    this.say();
    byId('challenge-setup').focus();
  }

  private say(text?: string): void {
    const c = this.challenge;
    const line = byId('challenge-state');
    if (text !== undefined) line.textContent = text;
    else if (this.attempt && c) line.textContent = `Running: ${this.attempt.tried.commands} of at most ${c.maxCommands} commands used.`;
    else if (this.waiting) line.textContent = 'Set up: change the mirror form as you like, then press Start mirror.';
    else line.textContent = '';
  }

  private result(tone: '' | 'right' | 'wrong', text: string): void {
    const box = byId('challenge-result');
    box.className = `lesson-result ${tone}`;
    box.textContent = text;
  }

  private async setUp(): Promise<void> {
    const c = this.challenge;
    if (!c) return;
    this.attempt = null;
    this.result('', '');
    try {
      this.diskBytes = (await this.hooks.setUp({ ...c.setup })).diskBytes;
      this.waiting = true;
      this.say();
    } catch (err) {
      this.say(explain(err, { image: c.setup.target }));
    }
  }

  /** A job was started from the mirror form: after Set up, it is the attempt. */
  started(id: string, target: string): void {
    const c = this.challenge;
    if (!c || !this.waiting) return;
    this.waiting = false;
    if (target !== c.setup.target) {
      this.say(`That job writes ${target}, not ${c.setup.target}: Set up again to try the challenge.`);
      return;
    }
    this.attempt = { job: id, tried: new ChallengeAttempt(c, this.diskBytes) };
    this.say();
  }

  onEvent(e: AnyQmpEvent): void {
    const attempt = this.attempt;
    if (!attempt || eventJob(e) !== attempt.job) return;
    attempt.tried.event(e);
    if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') void this.judge(attempt);
  }

  onProgress(p: JobProgress): void {
    const attempt = this.attempt;
    if (!attempt || p.info.device !== attempt.job) return;
    attempt.tried.progress(p.info.len, p.info.offset);
    if (p.guest && !p.guest.running) attempt.tried.guestStopped();
  }

  private async judge(attempt: { job: string; tried: ChallengeAttempt }): Promise<void> {
    const c = attempt.tried.challenge;
    let same: boolean | null = null;
    if (attempt.tried.recorder.facts.ending?.kind === 'completed') {
      await this.hooks.released(attempt.job);
      same = await worker().sameContent('demo.raw', c.setup.target).catch(() => null);
    }
    const verdict = attempt.tried.verdict(same);
    if (this.attempt !== attempt) return;
    this.attempt = null;
    this.say('');
    this.result(verdict.met ? 'right' : 'wrong', verdict.met ? `Goal met: ${verdict.why}.` : `Not met: ${verdict.why}. Set up to try again.`);
  }
}
