/** Runs the built diskmirror command in a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const BIN = new URL('../../bin/diskmirror.js', import.meta.url).pathname;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Added to the environment. */
  env?: Record<string, string>;
}

/** Runs to the end; `input` is written to stdin, which is then closed. */
export function run(args: string[], input?: string, options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** The id of the negotiation QmpSession sends first. */
/**
 * Runs the command and SIGKILLs it `afterMs` later: counted from its start,
 * or, with `anchor`, from the moment that file appears (a mirror's first
 * checkpoint), so the kill lands mid-copy however slowly the machine starts
 * processes. Resolves once it is gone (killed, or done first).
 */
export function killAfter(args: string[], afterMs: number, anchor?: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'ignore'] });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let poll: ReturnType<typeof setInterval> | undefined;
    const arm = () => (timer = setTimeout(() => child.kill('SIGKILL'), afterMs));
    if (anchor === undefined) arm();
    else {
      poll = setInterval(() => {
        if (!existsSync(anchor)) return;
        clearInterval(poll);
        arm();
      }, 10);
    }
    child.on('close', () => {
      clearTimeout(timer);
      clearInterval(poll);
      resolve();
    });
  });
}

export const NEGOTIATE = 'negotiate';

/** A running command speaking JSON lines: send commands, wait for events. */
export class QmpSession {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  private waiters: { test: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /**
   * Starts the command. In QMP mode over stdio the session negotiates at
   * once (`qmp_capabilities`, id NEGOTIATE), unless `negotiate: false`.
   */
  constructor(args: string[], options: RunOptions & { negotiate?: boolean } = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    });
    if (args.includes('--qmp') && options.negotiate !== false) this.child.stdin!.write(`${JSON.stringify({ execute: 'qmp_capabilities', id: NEGOTIATE })}\n`);
    this.child.stderr!.on('data', (d) => (this.stderr += d));
    createInterface({ input: this.child.stdout! }).on('line', (text) => {
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        line = { unparsed: text };
      }
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(line)) return true;
        w.resolve(line);
        return false;
      });
    });
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first line (already seen or to come) matching `test`. */
  waitFor(test: (line: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const seen = this.lines.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out; lines so far:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr}`)), timeoutMs);
      this.waiters.push({ test, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  status(status: string): Promise<Record<string, unknown>> {
    return this.waitFor((l) => l.event === 'JOB_STATUS_CHANGE' && (l.data as { status: string }).status === status);
  }

  event(name: string): Promise<Record<string, unknown>> {
    return this.waitFor((l) => l.event === name);
  }

  /** Sends a command and resolves with its answer (matched by id). */
  async execute(command: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = `c${Math.random().toString(36).slice(2)}`;
    this.child.stdin!.write(`${JSON.stringify({ execute: command, arguments: args ?? {}, id })}\n`);
    return this.waitFor((l) => l.id === id);
  }

  /** Ends the session (stdin closes, as a client leaving) and resolves with how the process exited. */
  close(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.stdin!.end();
    return this.exited;
  }

  /** What the monitor answered, without the greeting, the negotiation and events. */
  answers(): Record<string, unknown>[] {
    return this.lines.filter((l) => !('event' in l) && !('QMP' in l) && l.id !== NEGOTIATE);
  }

  events(): string[] {
    return this.lines
      .filter((l) => typeof l.event === 'string')
      .map((l) => (l.event === 'JOB_STATUS_CHANGE' ? (l.data as { status: string }).status : String(l.event)));
  }
}
