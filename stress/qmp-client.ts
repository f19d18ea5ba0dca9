/**
 * A small QMP client for the soak: spawns `diskmirror mirror --qmp` (over
 * stdio), negotiates, sends commands with ids and matches their answers,
 * keeps every event, and says how the process ended.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

export type Answer = { return: unknown } | { error: { class: string; desc: string } } | { gone: true };

export class MirrorProcess {
  readonly events: QmpEvent[] = [];
  readonly stderr: string[] = [];
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (a: Answer) => void>();
  private nextId = 1;
  private waiters: { test: (e: QmpEvent) => boolean; resolve: (e: QmpEvent | null) => void }[] = [];
  /** Settles with the exit code (or the signal's name) once the process has gone. */
  readonly exited: Promise<number | string>;
  private gone = false;

  constructor(
    bin: string,
    args: string[],
    /** Told of every event as it comes. */
    private readonly onEvent: (e: QmpEvent) => void = () => {},
  ) {
    this.child = spawn(process.execPath, [bin, 'mirror', '--qmp', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.gone = true;
        for (const [, answer] of this.pending) answer({ gone: true });
        this.pending.clear();
        for (const w of this.waiters) w.resolve(null);
        this.waiters = [];
        resolve(signal ?? code ?? -1);
      });
    });
    this.child.stdin!.on('error', () => {});
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line));
    createInterface({ input: this.child.stderr! }).on('line', (line) => this.stderr.push(line));
  }

  private onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.stderr.push(`(not JSON on stdout) ${line}`);
      return;
    }
    if (typeof msg.event === 'string') {
      const e = { event: msg.event, data: (msg.data ?? {}) as Record<string, unknown> };
      this.events.push(e);
      this.onEvent(e);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(e)) return true;
        w.resolve(e);
        return false;
      });
      return;
    }
    const id = msg.id as number | undefined;
    if (id !== undefined && this.pending.has(id)) {
      const answer = this.pending.get(id)!;
      this.pending.delete(id);
      answer('error' in msg ? { error: msg.error as { class: string; desc: string } } : { return: msg.return });
    }
  }

  /** Sends a command; an answer that does not come within `ms` is a hang of the monitor, thrown as such. */
  command(execute: string, args?: Record<string, unknown>, ms = 30_000): Promise<Answer> {
    if (this.gone) return Promise.resolve({ gone: true });
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${execute} within ${ms / 1000} s (the monitor hangs; job status ${this.status})`));
      }, ms);
      this.pending.set(id, (a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.child.stdin!.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** The first event (past or future) that passes `test`, or null if the process goes first or `ms` pass. */
  waitEvent(test: (e: QmpEvent) => boolean, ms: number, includePast = true): Promise<QmpEvent | null> {
    if (includePast) {
      const seen = this.events.find(test);
      if (seen) return Promise.resolve(seen);
    }
    if (this.gone) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter = { test, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(null);
      }, ms).unref();
    });
  }

  /** The exit code (or signal), or a hang thrown as such after `ms`. */
  async exit(ms: number, after: string): Promise<number | string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the mirror did not exit within ${ms / 1000} s after ${after} (job status ${this.status})`)), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  closeInput(): void {
    this.child.stdin!.end();
  }

  get status(): string {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.event === 'JOB_STATUS_CHANGE') return String(e.data.status);
    }
    return 'undefined';
  }
}
