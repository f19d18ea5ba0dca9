/**
 * The dialog a stop opens: which side failed, where and with what, the
 * io-status the stop left, and Resume or Cancel. It opens from the job
 * store (each BLOCK_JOB_ERROR that stopped a job) and closes once the job
 * has ended. The worker's event says which fault rule was behind the error
 * and whether it is still armed (the fault device matched it; nothing is
 * matched here): while it is, Resume would meet it again, so the dialog
 * says so and Close becomes its default. Escape (or Close) leaves the job
 * paused: free some space or remove a fault, then Resume from the panel.
 */
import type { EventData } from '../qapi/events.js';
import type { IoStatus } from '../qapi/policies.js';
import { type PageVerb, verbCall } from '../qapi/verbs.js';
import { formatSize } from '../util/size.js';
import { run } from './bridge.js';
import { byId } from './dom.js';
import { metStorageLimit } from './job-ending.js';
import type { JobChange, JobModel, JobStore } from './job-store.js';
import { type StorageFacts, storageFullWords } from './storage.js';

export interface StopDialogHooks {
  /** After Resume or Cancel: focus goes on to what comes next in the panel. */
  onAction(): void;
  /** A refused action, in the panel's error line. */
  onError(err: unknown): void;
  /** A stop of this job waits to be shown (a lesson asks its question first, then hands the job over: `release`). */
  held?(id: string): boolean;
}

/**
 * The dialog's words for a stop: its title, its text, and the armed fault's
 * warning (empty when none is armed). A target out of space names the
 * browser's storage (`storage`: as it reports it now).
 */
export function stopWords(
  id: string,
  error: EventData['BLOCK_JOB_ERROR'],
  ioStatus: IoStatus,
  armed = error.fault?.armed === true,
  storage: StorageFacts | null = null,
): { title: string; text: string; armed: string } {
  const side = error.operation === 'read' ? 'source' : 'target';
  const range = error.bytes > 0 ? `${formatSize(error.bytes)} at ${formatSize(error.offset)} (bytes ${error.offset}–${error.offset + error.bytes - 1})` : 'a flush';
  return {
    title: `Job ${id} stopped: ${side} ${error.operation} error`,
    text:
      `${error.operation === 'read' ? 'Reading' : 'Writing'} ${range} of the ${side} failed with ${error.errno}. ` +
      `on-${side}-error paused the job (io-status ${ioStatus}); the range stays dirty and is retried on Resume.` +
      (metStorageLimit(error) ? ` ${storageFullWords(storage, 'press Resume')}` : ''),
    armed: armed && error.fault ? `The fault that stopped it (${error.fault.rule}) is still armed: remove it under Faults first, or Resume meets it again.` : '',
  };
}

export class StopDialog {
  private readonly dialog = byId<HTMLDialogElement>('stop-dialog');
  /** The job the open dialog is about. */
  private job: string | null = null;
  /** How many stops of each job the dialog has shown. */
  private readonly shown = new Map<string, number>();
  /** What the open dialog shows: the error, the io-status, whether its fault is still armed. */
  private showing: { error: EventData['BLOCK_JOB_ERROR']; ioStatus: IoStatus; armed: boolean } | null = null;
  /** The job of the open dialog was seen paused (or in standby) since it opened: leaving that state closes the dialog. */
  private sawPause = false;
  /** Each job's rules as last listed. */
  private readonly rules = new Map<string, readonly string[]>();
  /** Whether each job was paused (or in standby) at its last change. */
  private readonly paused = new Map<string, boolean>();
  /** Stops held back while their job is held, by job. */
  private readonly pending = new Map<string, { error: EventData['BLOCK_JOB_ERROR']; ioStatus: IoStatus }>();

  constructor(
    private readonly store: JobStore,
    private readonly hooks: StopDialogHooks,
  ) {
    byId('stop-resume').addEventListener('click', () => void this.act('resume'));
    byId('stop-cancel').addEventListener('click', () => void this.act('cancel'));
    this.dialog.addEventListener('cancel', () => (this.job = null));
    byId('stop-close').addEventListener('click', () => this.close());
    store.listen((job, change) => this.update(job, change));
  }

  private update(job: JobModel, change: JobChange): void {
    // The storage as reported now: a dialog about a target out of space says it.
    if (change.cause === 'storage' && this.job === job.id && this.showing && metStorageLimit(this.showing.error)) {
      const s = this.showing;
      byId('stop-text').textContent = stopWords(job.id, s.error, s.ioStatus, s.armed, this.store.storage).text;
    }
    if (job.done) {
      this.pending.delete(job.id);
      this.rules.delete(job.id);
      if (this.job === job.id) this.close();
      return;
    }
    this.paused.set(job.id, job.status === 'paused' || job.status === 'standby');
    const seen = this.shown.get(job.id) ?? 0;
    this.shown.set(job.id, job.stops);
    if (job.stops > seen && job.lastError?.action === 'stop') {
      if (this.hooks.held?.(job.id)) this.pending.set(job.id, { error: job.lastError, ioStatus: job.ioStatus });
      else this.open(job.id, job.lastError, job.ioStatus);
      return;
    }
    if (this.job !== job.id) return;
    // The job left the pause (resumed from the panel, by a lesson, by another client): the dialog has nothing left to say.
    if (this.paused.get(job.id)) this.sawPause = true;
    else if (this.sawPause) this.close();
  }

  /** Shows the stop held back for job `id`, if any. */
  release(id: string): void {
    const held = this.pending.get(id);
    this.pending.delete(id);
    if (held) this.open(id, held.error, held.ioStatus);
  }

  /** The rules job `id` has now: a fault the dialog calls armed that is gone is no longer said to be. */
  faultsNow(id: string, rules: readonly string[]): void {
    this.rules.set(id, rules);
    const showing = this.showing;
    if (this.job !== id || !showing?.armed || !showing.error.fault) return;
    if (rules.includes(showing.error.fault.rule)) return;
    showing.armed = false;
    byId('stop-armed').textContent = '';
    byId('stop-resume').focus();
  }

  private open(id: string, error: EventData['BLOCK_JOB_ERROR'], ioStatus: IoStatus): void {
    const status = error['io-status'] ?? ioStatus;
    // Armed when the event came, and still listed (a rule removed since, by a person or a lesson, is not).
    const listed = this.rules.get(id);
    const armed = error.fault?.armed === true && (listed === undefined || listed.includes(error.fault.rule));
    this.showing = { error, ioStatus: status, armed };
    this.sawPause = this.paused.get(id) === true;
    const words = stopWords(id, error, status, armed, this.store.storage);
    byId('stop-title').textContent = words.title;
    byId('stop-text').textContent = words.text;
    byId('stop-armed').textContent = words.armed;
    this.job = id;
    if (!this.dialog.open) this.dialog.showModal();
    byId(words.armed ? 'stop-close' : 'stop-resume').focus();
  }

  private close(): void {
    this.job = null;
    this.showing = null;
    if (this.dialog.open) this.dialog.close();
  }

  private async act(verb: Extract<PageVerb, 'resume' | 'cancel'>): Promise<void> {
    const id = this.job;
    this.close();
    if (!id) return;
    this.hooks.onAction();
    try {
      // The job is paused: its Cancel is job-cancel, as the panel's is then.
      await run(verbCall(verb, id, { paused: true }));
    } catch (err) {
      this.hooks.onError(err);
    }
  }
}
