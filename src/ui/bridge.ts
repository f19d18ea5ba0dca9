/**
 * The page's one way to the worker: started lazily, wrapped once, typed by
 * the worker's own API (squoosh's worker-bridge habit). Errors come back
 * with their class and code (error-transfer.ts); callbacks cross as
 * comlink proxies, made here and nowhere else.
 */
import * as Comlink from 'comlink';
import type { EventSink, ProgressSink, ReleasedSink } from '../worker/api-types.js';
import type { WorkerApi } from '../worker/worker.js';
import { installErrorTransfer } from '../shared/error-transfer.js';

let remote: Comlink.Remote<WorkerApi> | undefined;

export function worker(): Comlink.Remote<WorkerApi> {
  if (!remote) {
    installErrorTransfer();
    const w = new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: 'diskmirror' });
    remote = Comlink.wrap<WorkerApi>(w);
  }
  return remote;
}

/** Hears the worker's events, progress (with pictures of `pictureCells` cells) and releases. */
export async function subscribe(onEvent: EventSink, onProgress: ProgressSink, onReleased: ReleasedSink, pictureCells: number): Promise<void> {
  await worker().subscribe(Comlink.proxy(onEvent), Comlink.proxy(onProgress), Comlink.proxy(onReleased), pictureCells);
}
