/**
 * The mirror command's plain mode (complete at READY; on a stop, ask on a
 * terminal or wait for a line), and what it shares with the QMP monitor
 * (qmp-monitor.ts): exit codes.
 */
import type { Interface } from 'node:readline';
import type { ProgressLine } from './progress.js';
import type { MirrorControl } from '../mirror/control.js';
import type { EventData } from '../qapi/events.js';
import type { MirrorJob } from '../mirror/mirror-job.js';
import type { JobResult } from '../mirror/types.js';

/** Exit codes. */
export const EXIT = { completed: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** What the loops need of an opened mirror. */
export interface RunningMirror {
  job: MirrorJob;
  control: MirrorControl;
}

type JobErrorData = EventData['BLOCK_JOB_ERROR'];

function describeError(d: JobErrorData): string {
  const where = d.bytes > 0 ? `bytes ${d.offset}-${d.offset + d.bytes - 1}` : 'a flush';
  return `${d.operation} error (${d.errno}) at ${where}: ${d.message}; action: ${d.action}`;
}

// ---- plain mode ---------------------------------------------------------------------

/** How long plain mode folds the repeats of one error into its next line. */
export const ERROR_FOLD_MS = 5000;

/**
 * Plain mode's error lines: at most one per distinct error (side and
 * operation, errno, range) every `windowMs`; the next line says how many
 * repeats it folded. QMP mode keeps every event, as QEMU does.
 */
export class ErrorLineFolder {
  private readonly seen = new Map<string, { printedAt: number; repeats: number; last: JobErrorData }>();

  constructor(
    private readonly windowMs = ERROR_FOLD_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The line to print for this error, or null when it folds into a later one. */
  line(d: JobErrorData): string | null {
    // The operation names the side: sources are read, targets written (and flushed).
    const key = `${d.operation}:${d.errno}:${d.offset}:${d.bytes}`;
    const now = this.now();
    const seen = this.seen.get(key);
    if (seen && now - seen.printedAt < this.windowMs) {
      seen.repeats++;
      seen.last = d;
      return null;
    }
    this.seen.set(key, { printedAt: now, repeats: 0, last: d });
    return describeError(d) + (seen && seen.repeats > 0 ? folded(seen.repeats, now - seen.printedAt) : '');
  }

  /** Lines for repeats not told yet (when the job ends). */
  flush(): string[] {
    const now = this.now();
    const lines: string[] = [];
    for (const seen of this.seen.values()) {
      if (seen.repeats > 0) lines.push(describeError(seen.last) + folded(seen.repeats, now - seen.printedAt));
      seen.repeats = 0;
      seen.printedAt = now;
    }
    return lines;
  }
}

function folded(repeats: number, elapsedMs: number): string {
  return ` (repeated ${repeats} time${repeats === 1 ? '' : 's'} in ${Math.max(1, Math.round(elapsedMs / 1000))} s)`;
}

/** Plain mode: complete at READY; on a stop, ask (terminal) or wait for a line on stdin. */
export function runPlain(opened: RunningMirror, lines: Interface, progress: ProgressLine | null): Promise<number | 'interrupted'> {
  const { job } = opened;
  const interactive = process.stdin.isTTY === true;
  const errors = new ErrorLineFolder();
  let stdinClosed = false;
  return new Promise((resolveRun) => {
    const ask = () => {
      progress?.clear();
      if (stdinClosed) {
        process.stderr.write('diskmirror mirror: the job is paused and stdin is closed; stopping (resume later with --resume)\n');
        resolveRun('interrupted');
        return;
      }
      if (interactive) process.stderr.write('The job is paused. Type "resume" (r) or "cancel" (c): ');
      else process.stderr.write('diskmirror mirror: paused; waiting for "resume" or "cancel" on stdin\n');
    };
    job.on((e) => {
      if (e.event === 'BLOCK_JOB_ERROR') {
        const text = errors.line(e.data);
        if (text === null) return;
        progress?.clear();
        process.stderr.write(`diskmirror mirror: ${text}\n`);
      } else if (e.event === 'JOB_STATUS_CHANGE' && (e.data.status === 'paused' || e.data.status === 'standby')) {
        if (answers.length > 0) queueMicrotask(apply);
        else ask();
      } else if (e.event === 'BLOCK_JOB_READY') {
        job.complete();
      }
    });
    // Answers typed (or piped) before a stop wait for it, in order.
    const answers: string[] = [];
    const paused = () => job.status === 'paused' || job.status === 'standby';
    const apply = () => {
      while (answers.length > 0 && paused()) {
        const answer = answers.shift()!;
        try {
          if (answer === 'resume' || answer === 'r') job.resume();
          else job.cancel(true);
        } catch (err) {
          process.stderr.write(`diskmirror mirror: ${(err as Error).message}\n`);
        }
      }
    };
    lines.on('line', (line) => {
      const answer = line.trim().toLowerCase();
      if (!answer) return;
      if (!['resume', 'r', 'cancel', 'c'].includes(answer)) {
        process.stderr.write(`diskmirror mirror: "${answer}" is neither resume nor cancel\n`);
        return;
      }
      answers.push(answer);
      apply();
    });
    lines.on('close', () => {
      stdinClosed = true;
      if (paused() && answers.length === 0) ask();
    });
    void job.result.then((r) => {
      progress?.finish();
      for (const text of errors.flush()) process.stderr.write(`diskmirror mirror: ${text}\n`);
      if (r.outcome === 'failed') process.stderr.write(`diskmirror mirror: the job failed: ${r.error}\n`);
      if (r.outcome === 'cancelled') process.stderr.write('diskmirror mirror: the job was cancelled; the target is incomplete\n');
      resolveRun(exitCodeFor(r));
    });
  });
}

export function exitCodeFor(result: JobResult): number {
  return result.outcome === 'completed' ? EXIT.completed : EXIT.failed;
}
