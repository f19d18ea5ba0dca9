/**
 * The mirror command's QMP monitor, as QEMU's: it opens with a greeting,
 * takes `qmp_capabilities` before anything else, reads a stream of JSON
 * commands (newlines optional) and answers them one at a time, in order,
 * with events in between. The job starts once a client has negotiated, and
 * the monitor goes on answering after the job has gone (query-block-jobs
 * gives [], verbs "Job not found") until the client says `quit` or leaves.
 *
 * Over stdio (`--qmp`) the process ends when stdin closes or after `quit`;
 * over a Unix socket (`--qmp unix:PATH`, as QEMU's `-qmp
 * unix:PATH,server=on`) clients come and go, one at a time (the next waits,
 * unread, as in QEMU's listen backlog), and the process ends after `quit`,
 * or once the job has gone and no client is connected. A client that does
 * not read its answers is not read either until it does.
 * A job still running when the session ends is interrupted (checkpoint,
 * exit 130); one told to finish, or finishing, is waited for.
 */
import * as fs from 'node:fs';
import { createServer, type Socket } from 'node:net';
import * as os from 'node:os';
import { dirname } from 'node:path';
import { getSystemErrorMap } from 'node:util';
import type { Readable, Writable } from 'node:stream';
import { CommandError, checkArguments, checkQmpRequest, type MirrorControl } from '../mirror/control.js';
import type { JobStatus } from '../qapi/job-states.js';
import type { MirrorJob } from '../mirror/mirror-job.js';
import { UsageError } from './args.js';
import { exitCodeFor } from './mirror-io.js';
import { type JsonItem, JsonStream } from './qmp-json.js';

/** Statuses a job only leaves for null: nothing is left to interrupt. */
const PAST_NO_RETURN: readonly JobStatus[] = ['waiting', 'pending', 'aborting', 'concluded', 'null'];

/** Commands that, once accepted, take the job to its end whatever the client does next. */
const ENDING_COMMANDS: ReadonlySet<string> = new Set(['job-complete', 'block-job-complete', 'job-cancel', 'block-job-cancel', 'job-finalize', 'job-dismiss']);

function errorAnswer(err: unknown): { class: string; desc: string } {
  if (err instanceof CommandError) return { class: err.qmpClass, desc: err.message };
  return { class: 'GenericError', desc: err instanceof Error ? err.message : String(err) };
}

/** QEMU's greeting, with diskmirror's version. */
export function greeting(version: string): unknown {
  const [major = 0, minor = 0, micro = 0] = version.split('.').map((n) => Number.parseInt(n, 10) || 0);
  return { QMP: { version: { qemu: { major, minor, micro }, package: `diskmirror ${version}` }, capabilities: [] } };
}

export interface MonitorContext {
  job: MirrorJob;
  control: MirrorControl;
  version: string;
  /** Called once, when the first client has negotiated: the job starts. */
  onNegotiated(): void;
  /** Whether a job-ending command was ever accepted (by any client). */
  ending: { value: boolean };
}

/** One client's session: greeting, negotiation, commands in order, events. */
class Session {
  private negotiated = false;
  private running = false;
  private readonly queue: JsonItem[] = [];
  private readonly stream: JsonStream;
  private detach: (() => void) | null = null;
  private closedResolve!: (how: 'closed' | 'quit') => void;
  /** Settles when the client leaves or says quit. */
  readonly closed = new Promise<'closed' | 'quit'>((resolve) => (this.closedResolve = resolve));
  private done = false;
  /** Why the session ends, once the client has left or said quit: it ends when what came before is answered. */
  private finishing: 'closed' | 'quit' | null = null;

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly context: MonitorContext,
    /** Replay the job's past events on negotiation (the first client); later clients hear only new ones. */
    private readonly replay: boolean,
  ) {
    this.stream = new JsonStream((item) => {
      this.queue.push(item);
      void this.drain();
    });
  }

  start(): void {
    this.write(greeting(this.context.version));
    this.input.setEncoding('utf8');
    this.input.on('data', (chunk: string) => this.stream.push(chunk));
    this.input.on('end', () => this.inputEnded());
    this.input.on('close', () => this.inputEnded());
    this.input.on('error', () => this.inputEnded());
    // A connection that waited its turn was accepted paused.
    this.input.resume();
  }

  private inputEnded(): void {
    if (this.done) return;
    this.stream.end();
    this.finishWhenIdle('closed');
  }

  private finishWhenIdle(how: 'closed' | 'quit'): void {
    this.finishing ??= how;
    // Answer what was already sent first: drain() finishes once it has.
    if (!this.running && this.queue.length === 0) this.finish();
  }

  private finish(): void {
    if (this.done || this.finishing === null) return;
    this.done = true;
    // Over stdio, stdout outlives stdin: events go on until the process ends. A socket closes both ways.
    if ((this.input as unknown) === (this.output as unknown)) this.detach?.();
    this.closedResolve(this.finishing);
  }

  private write(value: unknown): void {
    if (!this.output.writable) return;
    try {
      this.output.write(`${JSON.stringify(value)}\r\n`);
    } catch {
      // The client is gone: what it would have heard goes nowhere.
    }
  }

  /** Resolves once what was written has gone to the client, or the client has gone. */
  private drained(): Promise<void> {
    const output = this.output;
    if (!output.writableNeedDrain || output.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        output.off('drain', done);
        output.off('close', done);
        output.off('error', done);
        resolve();
      };
      output.on('drain', done);
      output.on('close', done);
      output.on('error', done);
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.input.pause();
    try {
      while (this.queue.length > 0 && !this.done) {
        const item = this.queue.shift()!;
        if ('error' in item) this.write({ error: { class: 'GenericError', desc: item.error } });
        else await this.answer(item.value);
        // A client that does not read its answers is not read either (as QEMU): answers never pile up.
        await this.drained();
      }
    } finally {
      this.running = false;
      if (this.queue.length === 0) this.finish();
      if (!this.done) this.input.resume();
    }
  }

  private async answer(value: unknown): Promise<void> {
    let response: Record<string, unknown>;
    let after: (() => void) | null = null;
    try {
      const request = checkQmpRequest(value);
      if (request.execute === 'qmp_capabilities') {
        // As QEMU: the arguments are checked first, then whether negotiation is over, then the capabilities.
        checkArguments('qmp_capabilities', request.arguments ?? {});
        if (this.negotiated) throw new CommandError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
        await this.context.control.execute('qmp_capabilities', request.arguments);
        this.negotiated = true;
        after = () => this.negotiate();
        response = { return: {} };
      } else if (!this.negotiated) {
        throw new CommandError('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
      } else if (request.execute === 'quit') {
        if (request.arguments !== undefined && Object.keys(request.arguments).length > 0) {
          throw new CommandError('GenericError', `Parameter '${Object.keys(request.arguments)[0]}' is unexpected`);
        }
        response = { return: {} };
        after = () => {
          this.write({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' }, timestamp: timestamp() });
          this.finishWhenIdle('quit');
        };
      } else {
        response = { return: await this.context.control.execute(request.execute, request.arguments) };
        if (ENDING_COMMANDS.has(request.execute)) this.context.ending.value = true;
      }
    } catch (err) {
      response = { error: errorAnswer(err) };
    }
    // Any JSON object's "id" comes back, whatever went wrong after it was read.
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && Object.hasOwn(value, 'id')) {
      response.id = (value as { id: unknown }).id;
    }
    this.write(response);
    after?.();
  }

  /** Negotiated: events flow to this client, and the job starts if it has not. */
  private negotiate(): void {
    this.detach = this.context.job.on((e) => this.write(e), { replay: this.replay });
    this.context.onNegotiated();
  }
}

function timestamp(): { seconds: number; microseconds: number } {
  const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}

/** How a session ended for the process: the job's exit code, or interrupted (checkpoint and 130). */
async function outcomeAfter(context: MonitorContext): Promise<number | 'interrupted'> {
  const { job } = context;
  if (job.status === 'null') return exitCodeFor(await job.result);
  // Told to finish, or already finishing: it ends by itself, and gives its own exit code.
  if (context.ending.value || PAST_NO_RETURN.includes(job.status)) return exitCodeFor(await job.result);
  return 'interrupted';
}

export interface QmpRun {
  job: MirrorJob;
  control: MirrorControl;
  version: string;
  /** Starts the job (once). */
  start(): void;
}

/** The context every session of a run shares; the job starts on the first negotiation. */
function monitorContext(run: QmpRun): { context: MonitorContext; started: () => boolean } {
  let started = false;
  const context: MonitorContext = {
    job: run.job,
    control: run.control,
    version: run.version,
    ending: { value: false },
    onNegotiated: () => {
      if (started) return;
      started = true;
      run.start();
    },
  };
  return { context, started: () => started };
}

/** `--qmp` over stdio: one session, and the process ends with it. */
export async function runQmpStdio(run: QmpRun, input: Readable = process.stdin, output: Writable = process.stdout): Promise<number | 'interrupted' | 'never-started'> {
  const { context, started } = monitorContext(run);
  const session = new Session(input, output, context, true);
  session.start();
  await session.closed;
  if (!started()) return 'never-started';
  return outcomeAfter(context);
}

/** The most bytes a Unix socket's path may have (sockaddr_un's sun_path, as QEMU counts it). */
export const MAX_SOCKET_PATH_BYTES = 108;
/** Clients that may wait their turn while one is served (QEMU's listen backlog holds them in the kernel). */
const MAX_WAITING_CLIENTS = 16;

/** A system error code in strerror()'s words ("No such file or directory"), as QEMU prints it. */
function strerror(code: string | undefined): string {
  const errno = code === undefined ? undefined : (os.constants.errno as Record<string, number>)[code];
  const text = errno === undefined ? undefined : getSystemErrorMap().get(-errno)?.[1];
  return text ? text[0]!.toUpperCase() + text.slice(1) : (code ?? 'unknown error');
}

/** A Unix socket listening for QMP clients, taken before any image is touched; clients wait in line. */
export interface QmpListener {
  readonly path: string;
  /** Connections not served yet, first come first. */
  readonly waiting: Socket[];
  /** Called when a connection joins the line. */
  onArrival: (() => void) | null;
  /** Stops listening and removes the socket file. */
  close(): void;
}

/**
 * Listens on PATH as QEMU's `-qmp unix:PATH,server=on` does: a path longer
 * than a socket address holds is refused (never bound under a truncated
 * name), an existing socket file is replaced (never a regular file), and a
 * failure names the path and its cause.
 */
export async function listenQmp(path: string): Promise<QmpListener> {
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new UsageError(`--qmp: UNIX socket path '${path}' is too long (${bytes} bytes; at most ${MAX_SOCKET_PATH_BYTES})`);
  }
  const failed = (code: string | undefined) => new UsageError(`--qmp: Failed to bind socket to ${path}: ${strerror(code)}`);
  // libuv reports a missing directory as EACCES: its directory is looked at first, for the real cause.
  try {
    if (!fs.statSync(dirname(path)).isDirectory()) throw failed('ENOTDIR');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw failed((err as NodeJS.ErrnoException).code);
  }
  const existing = fs.lstatSync(path, { throwIfNoEntry: false });
  if (existing && !existing.isSocket()) throw new UsageError(`--qmp unix:${path}: ${path} exists and is not a socket; refusing to replace it`);
  if (existing) fs.rmSync(path);
  // Connections are not read until served: one that waits hears nothing, as in QEMU's backlog.
  const server = createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(failed(err.code)));
    server.listen(path, () => resolve());
  });
  const listener: QmpListener = {
    path,
    waiting: [],
    onArrival: null,
    close: () => {
      if (!server.listening) return;
      server.close();
      for (const socket of listener.waiting.splice(0)) socket.destroy();
      fs.rmSync(path, { force: true });
    },
  };
  // A failed accept (out of file descriptors) leaves that client unserved, not the process dead.
  server.on('error', () => {});
  server.on('connection', (socket: Socket) => {
    socket.on('error', () => {});
    if (listener.waiting.length >= MAX_WAITING_CLIENTS) {
      socket.destroy();
      return;
    }
    listener.waiting.push(socket);
    listener.onArrival?.();
  });
  return listener;
}

/**
 * `--qmp unix:PATH`: one client at a time; the next waits, unread and not
 * greeted, until the one before leaves (as QEMU). The listener is closed,
 * and its socket file removed, when the run ends.
 */
export async function runQmpSocket(run: QmpRun, listener: QmpListener): Promise<number | 'interrupted' | 'never-started'> {
  const { context, started } = monitorContext(run);
  let jobGone = false;
  let current: Session | null = null;
  try {
    return await new Promise((resolveRun) => {
      let replay = true;
      let ended = false;
      const end = (outcome: Promise<number | 'interrupted' | 'never-started'>) => {
        ended = true;
        void outcome.then(resolveRun);
      };
      const serveNext = () => {
        if (current || ended) return;
        const socket = listener.waiting.shift();
        if (!socket) return;
        const session = new Session(socket, socket, context, replay);
        replay = false;
        current = session;
        session.start();
        void session.closed.then((how) => {
          current = null;
          socket.end();
          if (how === 'quit') end(started() ? outcomeAfter(context) : Promise.resolve('never-started'));
          else if (jobGone) end(outcomeAfter(context));
          else serveNext();
        });
      };
      void run.job.result.then(() => {
        jobGone = true;
        if (!current) end(outcomeAfter(context));
      });
      listener.onArrival = serveNext;
      serveNext();
    });
  } finally {
    listener.onArrival = null;
    listener.close();
  }
}
