/**
 * A lesson's second moment: before its next step (lifting a fault, a
 * Resume) the lesson asks again, and goes on once the learner has picked
 * an answer and pressed Go on.
 */
import type { Question } from '../lessons/lesson.js';
import { byId, h } from './dom.js';

export class LessonAsk {
  private answered: ((pick: string) => void) | null = null;

  constructor() {
    byId('lesson-ask-go').addEventListener('click', () => {
      const pick = this.pick();
      if (!pick || !this.answered) return;
      const done = this.answered;
      this.close();
      done(pick);
    });
  }

  private pick(): string | null {
    return byId('lesson-ask-choices').querySelector<HTMLInputElement>('input:checked')?.value ?? null;
  }

  /** Shows `q` and resolves with the learner's pick. */
  ask(q: Question): Promise<string> {
    byId('lesson-ask-question').textContent = q.question;
    byId('lesson-ask-choices').replaceChildren(
      ...q.choices.map((c) => h('label', { class: 'check' }, h('input', { type: 'radio', name: 'lesson-ask', value: c.id, onchange: () => (byId<HTMLButtonElement>('lesson-ask-go').disabled = false) }), c.label)),
    );
    byId<HTMLButtonElement>('lesson-ask-go').disabled = true;
    byId('lesson-ask').hidden = false;
    byId<HTMLInputElement>('lesson-ask-choices').querySelector('input')?.focus();
    return new Promise((resolve) => (this.answered = resolve));
  }

  /** Hides the question (answered, or the lesson left). */
  close(): void {
    this.answered = null;
    byId('lesson-ask').hidden = true;
  }
}
