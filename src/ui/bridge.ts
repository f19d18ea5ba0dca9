/**
 * The page's one way to the worker: started lazily, wrapped once, typed by
 * the worker's own API (squoosh's worker-bridge habit). Errors come back
 * with their class and code (error-transfer.ts); callbacks cross as
 * comlink proxies, made here and nowhere else. `restartWorker` kills the
 * worker as a closed tab would (its jobs die without a last word) and
 * starts a new one, subscribed as before: a lesson shows a resume with it.
 */
import * as Comlink from 'comlink';
import type { EventSink, ProgressSink, ReleasedSink } from '../worker/api-types.js';
import type { WorkerApi } from '../worker/worker.js';
import type { Call, CommandName } from '../qapi/commands.js';
import { installErrorTransfer } from '../shared/error-transfer.js';

/**
 * The worker as the page sees it. Comlink's mapping of a generic method
 * loses its type parameter; `execute` is async already, so its own type
 * (typed by src/qapi: a wrong command or argument does not compile) is
 * what the page calls.
 */
export type WorkerRemote = Omit<Comlink.Remote<WorkerApi>, 'execute'> & Pick<WorkerApi, 'execute'>;

let remote: WorkerRemote | undefined;
let thread: Worker | undefined;
let subscription: { onEvent: EventSink; onProgress: ProgressSink; onReleased: ReleasedSink; pictureCells: () => number } | undefined;

export function worker(): WorkerRemote {
  if (!remote) {
    installErrorTransfer();
    thread = new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: 'diskmirror' });
    remote = Comlink.wrap<WorkerApi>(thread) as unknown as WorkerRemote;
  }
  return remote;
}

const commandListeners: ((job: string) => void)[] = [];

/** Says that a command acting on job `job` was sent (a verb, a fault added or removed, the guest switched, the speed changed). */
export function noteCommand(job: string): void {
  for (const listener of commandListeners) listener(job);
}

/** Hears every command noted (a challenge counts its job's). */
export function onCommand(listener: (job: string) => void): void {
  commandListeners.push(listener);
}

/** Runs a command built as one value (a verb's, see qapi/verbs.ts); what it answers is the verb's caller's to ignore. */
export function run(call: Call): Promise<unknown> {
  const args = call.args as { id?: string; device?: string };
  noteCommand(args.id ?? args.device ?? '');
  // `call` was built typed (Call pairs each command with its own arguments); only the pair's union needs widening here.
  return (worker().execute as (command: CommandName, args: unknown) => Promise<unknown>)(call.command, call.args);
}

/** Hears the worker's events, progress (with pictures of `pictureCells` cells) and releases. */
export async function subscribe(onEvent: EventSink, onProgress: ProgressSink, onReleased: ReleasedSink, pictureCells: () => number): Promise<void> {
  subscription = { onEvent, onProgress, onReleased, pictureCells };
  await worker().subscribe(Comlink.proxy(onEvent), Comlink.proxy(onProgress), Comlink.proxy(onReleased), pictureCells());
}

/** Kills the worker (its jobs stop mid-copy, their checkpoints stay) and starts a new one. */
export async function restartWorker(): Promise<void> {
  thread?.terminate();
  remote = undefined;
  thread = undefined;
  if (subscription) await subscribe(subscription.onEvent, subscription.onProgress, subscription.onReleased, subscription.pictureCells);
}
