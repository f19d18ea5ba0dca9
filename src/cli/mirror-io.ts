/**
 * The mirror command's two ways of talking to a person or a program while
 * the job runs: QMP mode (events out as JSON lines, commands in) and plain
 * mode (complete at READY; on a stop, ask on a terminal or wait for a line).
 */
import type { Interface } from 'node:readline';
import type { ProgressLine } from './progress.js';
import { CommandError, checkRequest, type MirrorControl } from '../mirror/control.js';
import type { EventData } from '../mirror/events.js';
import type { JobStatus } from '../mirror/job-states.js';
import type { JobResult, MirrorJob } from '../mirror/mirror-job.js';

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

// ---- reading QMP input ------------------------------------------------------------

/** QEMU's parser limit (qobject/json-streamer.c). */
const MAX_NESTING = 1024;

class JsonSyntaxError extends Error {}

const WHITESPACE = new Set([' ', '\t', '\r', '\n']);
const STRUCTURAL = new Set(['{', '}', '[', ']', ',', ':']);
const ESCAPES: Readonly<Record<string, string>> = { '"': '"', "'": "'", '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * The JSON values on one line of QMP input, one after another, as QEMU's
 * streaming parser reads them (qobject/json-lexer.c, json-parser.c): RFC
 * 8259 plus QEMU's single-quoted strings. A syntax error is reported with
 * QEMU's text and ends the line. Objects have no prototype, so a member
 * named "__proto__" is only a member.
 */
export function readJsonValues(line: string): Array<{ value: unknown } | { error: string }> {
  const results: Array<{ value: unknown } | { error: string }> = [];
  let pos = 0;

  const fail = (message: string): never => {
    throw new JsonSyntaxError(message);
  };
  const skipSpace = () => {
    while (pos < line.length && WHITESPACE.has(line[pos]!)) pos++;
  };
  /** The next significant character, or fails with "premature EOI" at the end of the line. */
  const peek = (): string => {
    skipSpace();
    if (pos >= line.length) fail('JSON parse error, premature EOI');
    return line[pos]!;
  };

  const parseString = (): string => {
    const quote = line[pos]!;
    const start = pos++;
    let out = '';
    for (;;) {
      if (pos >= line.length) fail('JSON parse error, premature EOI');
      const c = line[pos]!;
      if (c === quote) {
        pos++;
        return out;
      }
      if (c < ' ') fail(`JSON parse error, stray '${line.slice(start, pos + 1)}'`);
      if (c !== '\\') {
        out += c;
        pos++;
        continue;
      }
      const e = line[pos + 1];
      if (e === 'u') {
        const hex = line.slice(pos + 2, pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('JSON parse error, invalid hex escape sequence in string');
        out += String.fromCharCode(parseInt(hex, 16));
        pos += 6;
      } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e];
        pos += 2;
      } else {
        fail('JSON parse error, invalid escape sequence in string');
      }
    }
  };

  const parseValue = (depth: number): unknown => {
    const c = peek();
    if (c === '{' || c === '[') {
      if (depth + 1 > MAX_NESTING) fail('JSON nesting depth limit exceeded');
      return c === '{' ? parseObject(depth + 1) : parseArray(depth + 1);
    }
    if (c === '"' || c === "'") return parseString();
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = pos;
      const m = NUMBER.exec(line);
      if (!m) fail(`JSON parse error, stray '${c}'`);
      pos += m![0].length;
      return Number(m![0]);
    }
    if (c >= 'a' && c <= 'z') {
      const start = pos;
      while (pos < line.length && line[pos]! >= 'a' && line[pos]! <= 'z') pos++;
      const word = line.slice(start, pos);
      if (word === 'true') return true;
      if (word === 'false') return false;
      if (word === 'null') return null;
      return fail(`JSON parse error, invalid keyword '${word}'`);
    }
    if (STRUCTURAL.has(c)) return fail('JSON parse error, expecting value');
    return fail(`JSON parse error, stray '${c}'`);
  };

  const parseObject = (depth: number): Record<string, unknown> => {
    const object = Object.create(null) as Record<string, unknown>;
    pos++; // {
    if (peek() === '}') {
      pos++;
      return object;
    }
    for (;;) {
      const k = peek();
      if (k !== '"' && k !== "'") fail('JSON parse error, key is not a string in object');
      const key = parseString();
      if (peek() !== ':') fail('JSON parse error, missing : in object pair');
      pos++;
      object[key] = parseValue(depth);
      const next = peek();
      pos++;
      if (next === '}') return object;
      if (next !== ',') fail('JSON parse error, expected separator in dict');
    }
  };

  const parseArray = (depth: number): unknown[] => {
    const array: unknown[] = [];
    pos++; // [
    if (peek() === ']') {
      pos++;
      return array;
    }
    for (;;) {
      array.push(parseValue(depth));
      const next = peek();
      pos++;
      if (next === ']') return array;
      if (next !== ',') fail('JSON parse error, expected separator in list');
    }
  };

  try {
    for (skipSpace(); pos < line.length; skipSpace()) results.push({ value: parseValue(0) });
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    results.push({ error: err.message });
  }
  return results;
}

// ---- QMP mode -----------------------------------------------------------------------

/** Statuses a job only leaves for null: nothing is left to interrupt. */
const PAST_NO_RETURN: readonly JobStatus[] = ['waiting', 'pending', 'aborting', 'concluded', 'null'];

/** Commands that, once accepted, take the job to its end whatever stdin does next. */
const ENDING_COMMANDS: ReadonlySet<string> = new Set(['job-complete', 'block-job-complete', 'job-cancel', 'block-job-cancel', 'job-finalize', 'job-dismiss']);

function errorAnswer(err: unknown): { class: string; desc: string } {
  if (err instanceof CommandError) return { class: err.qmpClass, desc: err.message };
  return { class: 'GenericError', desc: err instanceof Error ? err.message : String(err) };
}

/**
 * QMP mode: events out, commands in, until the job reaches null. Commands
 * run one at a time in the order received, each answered before the next
 * starts; stdin is not read meanwhile, so a burst of large commands is
 * taken as a stream. When stdin closes, a job still running is interrupted
 * (checkpoint kept); one that was told to finish, or is finishing, is
 * waited for and gives its own exit code.
 */
export function runQmp(opened: RunningMirror, lines: Interface): Promise<number | 'interrupted'> {
  const { job, control } = opened;
  const out = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
  job.on(out, { replay: true });

  let ending = false; // a command that ends the job was accepted
  let inputClosed = false;
  let running = false;
  const pending: string[] = [];

  const answer = async (value: unknown): Promise<void> => {
    let response: Record<string, unknown>;
    try {
      const request = checkRequest(value);
      response = { return: await control.execute(request.execute, request.arguments) };
      if (ENDING_COMMANDS.has(request.execute)) ending = true;
    } catch (err) {
      response = { error: errorAnswer(err) };
    }
    // Any JSON object's "id" comes back, whatever went wrong after it was read.
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && Object.hasOwn(value, 'id')) {
      response.id = (value as { id: unknown }).id;
    }
    out(response);
  };

  return new Promise((resolveRun) => {
    const settleIfClosed = () => {
      if (!inputClosed || running || pending.length > 0) return;
      // A job told to finish, or already finishing, ends by itself: job.result decides.
      if (ending || PAST_NO_RETURN.includes(job.status)) return;
      resolveRun('interrupted');
    };
    const drain = async () => {
      if (running) return;
      running = true;
      lines.pause();
      try {
        while (pending.length > 0) {
          for (const item of readJsonValues(pending.shift()!)) {
            if ('error' in item) out({ error: { class: 'GenericError', desc: item.error } });
            else await answer(item.value);
          }
        }
      } finally {
        running = false;
        if (inputClosed) settleIfClosed();
        else lines.resume();
      }
    };
    // Lines already read with the last chunk still arrive while paused: they wait here, in order.
    lines.on('line', (line) => {
      pending.push(line);
      void drain();
    });
    lines.on('close', () => {
      inputClosed = true;
      settleIfClosed();
    });
    void job.result.then((r) => resolveRun(exitCodeFor(r)));
  });
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
