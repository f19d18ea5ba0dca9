/**
 * The mirror command's two ways of talking to a person or a program while
 * the job runs: QMP mode (events out as JSON lines, commands in) and plain
 * mode (complete at READY; on a stop, ask on a terminal or wait for a line).
 */
import type { Interface } from 'node:readline';
import type { ProgressLine } from './progress.js';
import type { CommandError, MirrorControl } from '../mirror/control.js';
import type { AnyQmpEvent } from '../mirror/events.js';
import type { JobResult, MirrorJob } from '../mirror/mirror-job.js';

/** Exit codes. */
export const EXIT = { completed: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** What the loops need of an opened mirror. */
export interface RunningMirror {
  job: MirrorJob;
  control: MirrorControl;
}

function describeError(e: AnyQmpEvent): string {
  if (e.event !== 'BLOCK_JOB_ERROR') return '';
  const d = e.data;
  const where = d.bytes > 0 ? `bytes ${d.offset}-${d.offset + d.bytes - 1}` : 'a flush';
  return `${d.operation} error (${d.errno}) at ${where}: ${d.message}; action: ${d.action}`;
}

/** QMP mode: events out, commands in, until the job reaches null. */
export function runQmp(opened: RunningMirror, lines: Interface): Promise<number | 'interrupted'> {
  const { job, control } = opened;
  const out = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
  job.on(out, { replay: true });
  return new Promise((resolveRun) => {
    lines.on('line', (line) => {
      const text = line.trim();
      if (!text) return;
      let request: { execute?: unknown; arguments?: unknown; id?: unknown };
      try {
        request = JSON.parse(text) as typeof request;
      } catch (err) {
        out({ error: { class: 'GenericError', desc: `JSON parse error: ${(err as Error).message}` } });
        return;
      }
      const withId = (answer: Record<string, unknown>) => (request.id === undefined ? answer : { ...answer, id: request.id });
      if (typeof request.execute !== 'string') {
        out(withId({ error: { class: 'GenericError', desc: "QMP input member 'execute' is missing" } }));
        return;
      }
      if (request.execute === 'qmp_capabilities') {
        out(withId({ return: {} }));
        return;
      }
      control
        .execute(request.execute, (request.arguments ?? {}) as Record<string, unknown>)
        .then((value) => out(withId({ return: value })))
        .catch((err: CommandError) => out(withId({ error: { class: err.qmpClass ?? 'GenericError', desc: err.message } })));
    });
    // Nobody left to send commands: keep what was done, as for an interruption.
    lines.on('close', () => resolveRun('interrupted'));
    void job.result.then((r) => resolveRun(exitCodeFor(r)));
  });
}

/** Plain mode: complete at READY; on a stop, ask (terminal) or wait for a line on stdin. */
export function runPlain(opened: RunningMirror, lines: Interface, progress: ProgressLine | null): Promise<number | 'interrupted'> {
  const { job } = opened;
  const interactive = process.stdin.isTTY === true;
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
        progress?.clear();
        process.stderr.write(`diskmirror mirror: ${describeError(e)}\n`);
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
      if (r.outcome === 'failed') process.stderr.write(`diskmirror mirror: the job failed: ${r.error}\n`);
      if (r.outcome === 'cancelled') process.stderr.write('diskmirror mirror: the job was cancelled; the target is incomplete\n');
      resolveRun(exitCodeFor(r));
    });
  });
}

export function exitCodeFor(result: JobResult): number {
  return result.outcome === 'completed' ? EXIT.completed : EXIT.failed;
}

