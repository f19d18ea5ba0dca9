/**
 * The page's one way to the worker: started lazily, wrapped once, typed by
 * the worker's own API (squoosh's worker-bridge habit).
 */
import * as Comlink from 'comlink';
import type { WorkerApi } from '../worker/worker.js';
import { installErrorTransfer } from '../worker/error-transfer.js';
import { lockTab } from '../block/opfs-lock.js';

let remote: Comlink.Remote<WorkerApi> | undefined;

export function worker(): Comlink.Remote<WorkerApi> {
  if (!remote) {
    installErrorTransfer();
    // The worker takes this page's tab id (from its name), so image locks from either say the same tab.
    const w = new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: `diskmirror ${lockTab()}` });
    remote = Comlink.wrap<WorkerApi>(w);
  }
  return remote;
}

export { Comlink };
