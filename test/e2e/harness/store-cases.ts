/**
 * The OPFS FileStore and its Web Locks, inside a dedicated worker in
 * Chromium: locks conflict as QEMU's do and name their holder, a new image
 * appears under its name only when published (by move), an image that
 * replaces another never replaces one somebody holds, and image conflicts
 * keep their class across the worker boundary.
 */
import { BlockError, ImageConflictError, LockError, describeLockHolder } from '../../../src/block/block-device.js';
import { checkImageLock, imageLocks, tryWebLock, imageLockName } from '../../../src/block/opfs-lock.js';
import { OpfsFileStore, TEMPORARY_MARK } from '../../../src/block/opfs-store.js';
import { createInStore, openChain, refuseOverlap } from '../../../src/format/image-access.js';
import { deserializeError, serializeError } from '../../../src/shared/error-transfer.js';

interface Case {
  name: string;
  run(): Promise<void>;
}

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(what);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

async function freshDir(): Promise<FileSystemDirectoryHandle> {
  const root = await navigator.storage.getDirectory();
  const name = `store-tests-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  return root.getDirectoryHandle(name, { create: true });
}

async function names(dir: FileSystemDirectoryHandle): Promise<string[]> {
  const out: string[] = [];
  for await (const [name] of dir as unknown as AsyncIterable<[string, unknown]>) out.push(name);
  return out.sort();
}

async function bytesOf(dir: FileSystemDirectoryHandle, name: string): Promise<Uint8Array> {
  return new Uint8Array(await (await (await dir.getFileHandle(name)).getFile()).arrayBuffer());
}

async function writeFile(dir: FileSystemDirectoryHandle, name: string, data: Uint8Array): Promise<void> {
  const handle = await (await dir.getFileHandle(name, { create: true })).createSyncAccessHandle();
  handle.truncate(0);
  handle.write(data, { at: 0 });
  handle.close();
}

/** Stores over one fresh directory, each for its own holder. */
async function setup(): Promise<{ dir: FileSystemDirectoryHandle; store: (holder: string) => OpfsFileStore }> {
  const dir = await freshDir();
  return { dir, store: (holder) => new OpfsFileStore(async () => dir, holder) };
}

/** Image names must differ between cases: locks are per origin, by name. */
let serial = 0;
const unique = (name: string) => `${serial++}-${Date.now().toString(36)}-${name}`;

export const storeCases: Case[] = [
  {
    name: 'store: readers share; a writer meets them (and they it) with a LockError naming the holder',
    async run() {
      const { dir, store } = await setup();
      const name = unique('a.raw');
      await writeFile(dir, name, new Uint8Array(4096));
      const r1 = await store('the job "one"').open(name, { readOnly: true });
      const r2 = await store('the job "two"').open(name, { readOnly: true });
      check((await checkImageLock(name, 'shared')) === null, 'readers do not stand in the way of a reader');
      const err = await rejection(store('the job "three"').open(name, { readOnly: false }));
      check(err instanceof LockError, `expected a LockError, got ${String(err)}`);
      check(err.mode === 'exclusive' && err.image === name, 'mode and image');
      check(/^Failed to get "write" lock: .* is in use by the job "(one|two)"$/.test(err.message), err.message);
      await r1.device.close();
      await r2.device.close();
      const w = await store('the job "three"').open(name, { readOnly: false });
      const shared = await rejection(store('the job "four"').open(name, { readOnly: true }));
      check(shared instanceof LockError && shared.message === `Failed to get shared "write" lock: ${name} is being written by the job "three"`, String(shared));
      const state = (await imageLocks()).get(name);
      check(state?.mode === 'exclusive' && state.holders.length === 1 && describeLockHolder(state.holders[0]!.holder) === 'the job "three"' && state.holders[0]!.thisTab, JSON.stringify(state));
      check((await checkImageLock(name, 'shared'))?.message === shared.message, 'a check finds what an open meets');
      await w.device.close();
      check((await imageLocks()).get(name) === undefined, 'the lock goes with the close');
      check((await checkImageLock(name, 'exclusive')) === null, 'and a check finds it free');
    },
  },
  {
    name: 'store: identity is the entry (opfs:NAME), its size and lastModified, which a write moves on',
    async run() {
      const { dir, store } = await setup();
      const name = unique('b.raw');
      await writeFile(dir, name, new Uint8Array(1000));
      const s = store('test');
      const before = await s.identify(name);
      check(before?.key === `opfs:${name}` && before.size === 1000, JSON.stringify(before));
      check((await s.identify(unique('missing.raw'))) === null, 'nothing there is null');
      await new Promise((r) => setTimeout(r, 20));
      const file = await s.open(name, { readOnly: false });
      await file.device.write(2000, new Uint8Array(10));
      const after = await file.device.identity!();
      check(after.size === 2010 && after.modifiedMs > before.modifiedMs, `${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
      await file.device.close();
    },
  },
  {
    name: 'store: a new image is invisible until published (moved into place), then is the same open device, under its own lock',
    async run() {
      const { dir, store } = await setup();
      const name = unique('new.qcow2');
      const s = store('the job "maker"');
      const made = await createInStore(s, name, { format: 'qcow2', size: 1 << 20 }, { replace: false });
      const during = await names(dir);
      check(!during.includes(name) && during.some((n) => n.startsWith(name + TEMPORARY_MARK)), during.join(','));
      await made.image.write(0, new Uint8Array(65536).fill(0xab));
      await made.publish();
      check((await names(dir)).join(',') === name, (await names(dir)).join(','));
      // Still the open image, writing the published file.
      await made.image.write(65536, new Uint8Array(65536).fill(0xcd));
      await made.image.flush();
      const err = await rejection(store('other').open(name, { readOnly: true }));
      check(err instanceof LockError && err.holder === 'the job "maker"', String(err));
      const temporaryHeld = [...(await imageLocks()).keys()].some((k) => k.includes(TEMPORARY_MARK));
      check(!temporaryHeld, 'the temporary name is let go');
      await made.image.close();
      const reread = await openChain(store('reader'), name, { readOnly: true });
      const back = new Uint8Array(131072);
      await reread.image.read(0, back);
      check(back[0] === 0xab && back[65536] === 0xcd, 'both writes are in the published image');
      await reread.image.close();
    },
  },
  {
    name: 'store: a new image never replaces a file that appeared meanwhile (EEXIST), which is left as it was',
    async run() {
      const { dir, store } = await setup();
      const name = unique('race.raw');
      const made = await createInStore(store('maker'), name, { format: 'raw', size: 4096 }, { replace: false });
      await writeFile(dir, name, new Uint8Array([1, 2, 3]));
      const err = await rejection(made.publish());
      check(err instanceof BlockError && err.code === 'EEXIST', String(err));
      await made.discard();
      // (createInStore's discard does nothing once a publish was tried: the image is closed here, and its
      // temporary file, whose lock is then free, goes with the next clean-up.)
      await made.image.close().catch(() => {});
      await OpfsFileStore.removeStaleTemporaries(dir, await names(dir));
      check((await names(dir)).join(',') === name, (await names(dir)).join(','));
      check((await bytesOf(dir, name)).join(',') === '1,2,3', 'the other file is untouched');
    },
  },
  {
    name: 'store: replacing an image waits for nobody: a held one is refused, a free one stays whole until the new one is published',
    async run() {
      const { dir, store } = await setup();
      const name = unique('demo.raw');
      await writeFile(dir, name, new Uint8Array(4096).fill(1));
      const reader = await store('the job "reader"').open(name, { readOnly: true });
      const err = await rejection(createInStore(store('maker'), name, { format: 'raw', size: 4096 }, { replace: true }));
      check(err instanceof LockError && err.message === `Failed to get "write" lock: ${name} is in use by the job "reader"`, String(err));
      await reader.device.close();
      const made = await createInStore(store('maker'), name, { format: 'raw', size: 4096 }, { replace: true });
      await made.image.write(0, new Uint8Array(4096).fill(2));
      await made.image.flush();
      check((await bytesOf(dir, name))[0] === 1, 'the old image is whole until the publish');
      await made.publish();
      check((await bytesOf(dir, name))[0] === 2, 'the new one replaced it');
      check((await names(dir)).join(',') === name, (await names(dir)).join(','));
      await made.image.write(0, new Uint8Array(1).fill(3));
      await made.image.close();
      check((await bytesOf(dir, name))[0] === 3, 'the open image writes the published file');
      check((await imageLocks()).get(name) === undefined, 'every lock is let go');
    },
  },
  {
    name: 'store: a target that is the source is refused by identity before anything is written',
    async run() {
      const { dir, store } = await setup();
      const name = unique('self.raw');
      await writeFile(dir, name, new Uint8Array(4096));
      const s = store('the job "self"');
      const source = await openChain(s, name, { readOnly: true });
      const err = await (async () => {
        try {
          refuseOverlap(source, name, name, await s.identify(name));
        } catch (e) {
          return e;
        }
        return null;
      })();
      await source.image.close();
      check(err instanceof ImageConflictError && !(err instanceof LockError), String(err));
    },
  },
  {
    name: 'store: a temporary file whose maker is gone is removed; one still being made is left alone',
    async run() {
      const { dir, store } = await setup();
      const name = unique('left.raw');
      const stale = `${name}${TEMPORARY_MARK}stale`;
      await writeFile(dir, stale, new Uint8Array(10));
      const made = await createInStore(store('maker'), name, { format: 'raw', size: 4096 }, { replace: false });
      await OpfsFileStore.removeStaleTemporaries(dir, await names(dir));
      const left = await names(dir);
      check(!left.includes(stale) && left.length === 1 && left[0]!.startsWith(name + TEMPORARY_MARK), left.join(','));
      await made.discard();
      check((await names(dir)).length === 0, (await names(dir)).join(','));
    },
  },
  {
    name: 'errors: LockError and ImageConflictError keep their class, fields and message across the worker boundary',
    async run() {
      const lock = new LockError('demo.raw', 'exclusive', { kind: 'job', id: 'mirror0' });
      const back = deserializeError(JSON.parse(JSON.stringify(serializeError(lock))));
      check(back instanceof LockError && back instanceof ImageConflictError, `class ${back.name}`);
      check(back.image === 'demo.raw' && back.mode === 'exclusive' && back.holder === 'the job "mirror0"' && back.by.kind === 'job' && back.by.id === 'mirror0' && back.code === 'EBUSY', JSON.stringify(back));
      check(back.message === 'Failed to get "write" lock: demo.raw is in use by the job "mirror0"', back.message);
      const conflict = new ImageConflictError('a.raw', 'a.raw is the source image a.raw itself');
      const back2 = deserializeError(JSON.parse(JSON.stringify(serializeError(conflict))));
      check(back2 instanceof ImageConflictError && !(back2 instanceof LockError) && back2.image === 'a.raw' && back2.code === 'EBUSY', JSON.stringify(back2));
      check(back2.message === conflict.message, back2.message);
    },
  },
  {
    name: 'locks: a lock is only ever tried, never waited for',
    async run() {
      const name = imageLockName(unique('try.raw'));
      const first = await tryWebLock(name, 'exclusive');
      check(first, 'the first is free');
      check((await tryWebLock(name, 'shared')) === null, 'a second is refused at once');
      await first.release();
      const again = await tryWebLock(name, 'shared');
      check(again, 'free once released');
      await again.release();
    },
  },
];
