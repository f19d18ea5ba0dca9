/**
 * QEMU's mirror job, the reference, driven over QMP: start
 * qemu-system-x86_64 with no machine (`-machine none -qmp stdio`), add each
 * image as a `raw` node over an optional `blkdebug` node over a `file` node,
 * run `blockdev-mirror` and the job verbs, collect the events, quit.
 *
 * The QMP peer itself (QmpPeer) is shared with diskmirror's side of the
 * differential test: it reads one JSON message a line, matches answers to
 * commands by id, keeps every event, and knows whether the other end opened
 * with QMP's greeting.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { requireProgram } from './require-program.js';

export const QEMU_SYSTEM = 'qemu-system-x86_64' as const;

/** Fails (never skips) a suite that needs QEMU itself, saying how to get it. */
export function requireQemuSystem(): void {
  requireProgram(QEMU_SYSTEM, 'QEMU itself runs the mirror these tests compare with');
}

export type Json = Record<string, unknown>;

export interface QmpError {
  class: string;
  desc: string;
}

/** What a command got back: QMP's `return` or `error`, or nothing because the peer had gone. */
export type QmpAnswer = { return: unknown } | { error: QmpError } | { gone: string };

export interface QmpEvent {
  event: string;
  data: Json;
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP peer on a child's stdin/stdout. */
export class QmpPeer {
  /** Every event, in order of arrival. */
  readonly events: QmpEvent[] = [];
  /** Lines that were not JSON objects (kept for error messages). */
  readonly junk: string[] = [];
  greeting: Json | null = null;
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitedYet = false;
  private firstMessage!: (message: Json | null) => void;
  /** Resolves with the first message, or null when the peer ended without one. */
  readonly first: Promise<Json | null> = new Promise((resolve) => (this.firstMessage = resolve));
  private readonly answers = new Map<string, (answer: QmpAnswer) => void>();
  private watchers: { test: (e: QmpEvent) => boolean; resolve: (e: QmpEvent) => void }[] = [];
  private nextId = 0;

  constructor(
    readonly child: ChildProcess,
    readonly label: string,
  ) {
    child.stderr!.on('data', (d) => (this.stderr += d));
    child.stdin!.on('error', () => {}); // a peer that went away: its answers say so
    createInterface({ input: child.stdout! }).on('line', (line) => this.take(line));
    this.exited = new Promise((resolve) =>
      child.on('close', (code, signal) => {
        this.exitedYet = true;
        this.firstMessage(null);
        const why = `${this.label} exited (${signal ?? `code ${code}`})`;
        for (const settle of this.answers.values()) settle({ gone: why });
        this.answers.clear();
        resolve({ code, signal });
      }),
    );
  }

  get gone(): boolean {
    return this.exitedYet;
  }

  private take(line: string): void {
    let message: Json;
    try {
      const parsed = JSON.parse(line) as unknown;
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      message = parsed as Json;
    } catch {
      this.junk.push(line);
      return;
    }
    this.firstMessage(message);
    if ('QMP' in message) {
      this.greeting = message;
    } else if (typeof message.event === 'string') {
      const event = message as unknown as QmpEvent;
      this.events.push(event);
      this.watchers = this.watchers.filter((w) => {
        if (!w.test(event)) return true;
        w.resolve(event);
        return false;
      });
    } else if (typeof message.id === 'string' && this.answers.has(message.id)) {
      const settle = this.answers.get(message.id)!;
      this.answers.delete(message.id);
      settle('error' in message ? { error: message.error as QmpError } : { return: message.return });
    } else {
      this.junk.push(line);
    }
  }

  private request(command: string, args?: Json): { text: string; answer: Promise<QmpAnswer> } {
    const id = `${this.label}-${this.nextId++}`;
    const answer = new Promise<QmpAnswer>((resolve) => {
      if (this.exitedYet) resolve({ gone: `${this.label} had exited` });
      else this.answers.set(id, resolve);
    });
    return { text: `${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`, answer };
  }

  /** Sends one command; resolves with its answer (or `gone` when the peer ends first, or after `timeoutMs`). */
  execute(command: string, args?: Json, timeoutMs = 10_000): Promise<QmpAnswer> {
    return this.executeAll([[command, args]], timeoutMs).then((a) => a[0]!);
  }

  /** Sends commands back to back in one write, as a client pipelining them would; resolves with their answers. */
  executeAll(commands: Array<[string, Json | undefined]>, timeoutMs = 10_000): Promise<QmpAnswer[]> {
    const requests = commands.map(([command, args]) => this.request(command, args));
    if (!this.exitedYet) this.child.stdin!.write(requests.map((r) => r.text).join(''));
    return Promise.all(
      requests.map((r) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<QmpAnswer>((resolve) => (timer = setTimeout(() => resolve({ gone: `${this.label} did not answer within ${timeoutMs} ms` }), timeoutMs)));
        return Promise.race([r.answer, late]).finally(() => clearTimeout(timer));
      }),
    );
  }

  /**
   * The first event matching `test` among those from index `since` on (seen
   * already or to come); null after `timeoutMs`, or once the peer has gone.
   */
  waitEvent(test: (e: QmpEvent) => boolean, timeoutMs: number, since = 0): Promise<QmpEvent | null> {
    const seen = this.events.slice(since).find(test);
    if (seen) return Promise.resolve(seen);
    if (this.exitedYet) return Promise.resolve(null);
    return new Promise((resolve) => {
      let settled = false;
      const finish = (e: QmpEvent | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.watchers = this.watchers.filter((w) => w !== watcher);
        resolve(e);
      };
      const watcher = { test, resolve: finish };
      const timer = setTimeout(() => finish(null), timeoutMs);
      this.watchers.push(watcher);
      void this.exited.then(() => finish(null));
    });
  }

  /** Ends the peer: `quit` (QMP's way out), then stdin closed, then SIGKILL if it lingers. */
  async close(graceMs = 3000): Promise<void> {
    if (!this.exitedYet) {
      void this.execute('quit', undefined, graceMs);
      this.child.stdin!.end();
    }
    const killer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(killer);
  }
}

// ---- QEMU ---------------------------------------------------------------------------

/** A blkdebug inject-error rule (qapi/block-core.json BlkdebugInjectErrorOptions). */
export interface BlkdebugRule {
  event: 'read_aio' | 'write_aio' | 'flush_to_disk';
  errno: number;
  /** In 512-byte sectors: the rule fires for a request covering this sector (absent: any request). */
  sector?: number;
  /** Only requests of this type fail (absent: reads, writes, zero writes, discards and flushes). */
  iotype?: 'read' | 'write' | 'flush';
  once: boolean;
  /** Active only in this blkdebug state (absent: in any). */
  state?: number;
}

/** A blkdebug set-state rule: `event` moves the node from `state` to `new_state` (states start at 1). */
export interface BlkdebugSetState {
  event: 'read_aio' | 'write_aio' | 'flush_to_disk';
  state: number;
  new_state: number;
}

/** blockdev-mirror's arguments (qapi/block-core.json), QAPI spellings. */
export interface BlockdevMirrorArgs {
  'job-id': string;
  device: string;
  target: string;
  sync: 'full' | 'top' | 'none';
  speed?: number;
  granularity?: number;
  'buf-size'?: number;
  'on-source-error'?: string;
  'on-target-error'?: string;
  'copy-mode'?: 'background' | 'write-blocking';
}

/**
 * qemu-system-x86_64 with no machine and its QMP monitor on stdio. A guest
 * writes to the source through an NBD export of the source node (QEMU's
 * own qemu-io over a Unix socket): the writes take the path a device's
 * writes take, through the mirror's filter, and nothing drains the node
 * (HMP's qemu-io would, which pauses and resumes the job around each write).
 */
export class QemuMirror {
  private nbdSocket: string | null = null;

  private constructor(
    readonly qmp: QmpPeer,
    private readonly cwd: string,
  ) {}

  static async start(cwd: string): Promise<QemuMirror> {
    const child = spawn(QEMU_SYSTEM, ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', 'stdio'], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const qmp = new QmpPeer(child, 'qemu');
    child.on('error', () => {}); // reported through `first` below
    const first = await qmp.first;
    if (!first || !('QMP' in first)) throw new Error(`${QEMU_SYSTEM} did not greet: ${first ? JSON.stringify(first) : qmp.stderr}`);
    const negotiated = await qmp.execute('qmp_capabilities');
    if (!('return' in negotiated)) throw new Error(`qmp_capabilities: ${JSON.stringify(negotiated)}`);
    return new QemuMirror(qmp, cwd);
  }

  get events(): QmpEvent[] {
    return this.qmp.events;
  }

  private async must(command: string, args: Json): Promise<void> {
    const answer = await this.qmp.execute(command, args);
    if (!('return' in answer)) throw new Error(`${command} ${JSON.stringify(args)}: ${JSON.stringify(answer)}`);
  }

  /**
   * `nodeName` is a raw node over a file node for `filename`, with a
   * blkdebug node between them when there are rules.
   */
  async addImage(nodeName: string, filename: string, rules: { inject?: BlkdebugRule[]; setState?: BlkdebugSetState[] } = {}): Promise<void> {
    await this.must('blockdev-add', { driver: 'file', 'node-name': `${nodeName}-file`, filename });
    let below = `${nodeName}-file`;
    const inject = rules.inject ?? [];
    const setState = rules.setState ?? [];
    if (inject.length > 0 || setState.length > 0) {
      // An empty list is refused ("doesn't support the option"): only what is there is given.
      const options: Json = { driver: 'blkdebug', 'node-name': `${nodeName}-debug`, image: below };
      if (inject.length > 0) options['inject-error'] = inject;
      if (setState.length > 0) options['set-state'] = setState;
      await this.must('blockdev-add', options);
      below = `${nodeName}-debug`;
    }
    await this.must('blockdev-add', { driver: 'raw', 'node-name': nodeName, file: below });
  }

  /** Exports `nodeName` writable over NBD (before the job starts), for guestWrite. */
  async exportForGuest(nodeName: string, socketPath: string): Promise<void> {
    await this.must('nbd-server-start', { addr: { type: 'unix', data: { path: socketPath } } });
    await this.must('block-export-add', { type: 'nbd', id: 'guest', 'node-name': nodeName, writable: true });
    this.nbdSocket = `nbd+unix:///${nodeName}?socket=${socketPath}`;
  }

  /** A guest write to the exported node: `bytes` bytes of `pattern` at `offset`. Resolves with qemu-io's complaint, or null. */
  guestWrite(offset: number, bytes: number, pattern: number): Promise<string | null> {
    const url = this.nbdSocket;
    if (!url) throw new Error('guestWrite needs exportForGuest first');
    return new Promise((resolve) => {
      const child = spawn('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${bytes}`, url], { cwd: this.cwd });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', (err) => resolve(err.message));
      child.on('close', (code) => resolve(code === 0 && !/error|failed/i.test(out) ? null : out.trim() || `qemu-io exited ${code}`));
    });
  }

  mirror(args: BlockdevMirrorArgs): Promise<QmpAnswer> {
    return this.qmp.execute('blockdev-mirror', args as unknown as Json);
  }

  execute(command: string, args?: Json): Promise<QmpAnswer> {
    return this.qmp.execute(command, args);
  }

  stop(): Promise<void> {
    return this.qmp.close();
  }
}
