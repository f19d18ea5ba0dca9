/**
 * The checkpoint store contract (mirror/checkpoint-store.ts), written once
 * and run against both stores: IndexedDB (the worker's, here over
 * fake-indexeddb) and the sidecar file (the command's). Each case goes
 * through the store's interface only; a store's own part is how a record
 * is planted as the current version writes it (or damaged) and the words
 * it refuses one with.
 */
import 'fake-indexeddb/auto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDB } from 'idb';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { SidecarCheckpointer } from '../../src/cli/sidecar.js';
import { type CheckpointImages, type CheckpointRecord, type CheckpointStore, type ReadCheckpoint, HEARTBEAT_MS, StoredCheckpoints } from '../../src/mirror/checkpoint-store.js';
import { resolveOptions } from '../../src/mirror/options.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { IdbCheckpointer, listCheckpoints, unresumable } from '../../src/worker/checkpoint-store.js';

const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'diskmirror-checkpoint-stores-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.useRealTimers();
});

const stamp = { name: '/d/src.raw', key: 'node:1:2', size: MiB, modifiedMs: 1_700_000_000_000.5 };
const IMAGES: CheckpointImages = { source: [stamp], target: { ...stamp, name: '/d/dst.raw', key: 'node:1:3' } };
/** The images as stamped once closed: another modification time. */
const CLOSED: CheckpointImages = { source: [stamp], target: { ...IMAGES.target, modifiedMs: 1_700_000_009_000, digest: 'ab12' } };

function checkpoint(id: string, bitmap: number[], savedAt = 1234): Checkpoint {
  return { id, options: resolveOptions({ sync: 'full', id }, { targetIsZero: true }), size: MiB, status: 'running', offset: 0, bitmap: new Uint8Array(bitmap), savedAt };
}

interface StoreUnderTest {
  id: string;
  /** A store over this job's record; another one over the same record is a resumed job's. */
  open(stamps?: () => Promise<CheckpointImages>): CheckpointStore;
  /** Stores a record as this version writes it, each field of `changes` put over it (undefined: left out). */
  plant(changes: Record<string, unknown>): Promise<void>;
  /** How the store refuses a record of another version, and a damaged one. */
  otherVersion: RegExp;
  damaged(what: string): RegExp;
}

interface StoreFactory {
  name: string;
  make(): StoreUnderTest;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const given = (images: CheckpointImages) => async () => images;
let jobs = 0;

const factories: StoreFactory[] = [
  {
    name: 'IndexedDB',
    make() {
      const id = `job${jobs++}`;
      const context = { kind: 'mirror' as const, source: { kind: 'opfs' as const, name: 'src.raw' }, target: 'dst.raw', targetFormat: 'raw' as const };
      return {
        id,
        open: (stamps = given(IMAGES)) => new IdbCheckpointer(id, context, stamps),
        async plant(changes) {
          // As IdbCheckpointer writes them: the record, and its heartbeat beside it.
          const record = { id, version: 2, ...context, size: MiB, options: checkpoint(id, []).options, status: 'running', savedAt: 1234, bitmap: new Uint8Array([1, 2, 3]), dirtyBytes: MiB, images: IMAGES, final: false };
          const db = await openDB('diskmirror', 2);
          try {
            await db.put('checkpoints', withChanges(record, changes));
            await db.put('heartbeats', { id, at: 5678 });
          } finally {
            db.close();
          }
        },
        otherVersion: new RegExp(`^the checkpoint of "${id}" was saved by another version of diskmirror, without the stamps of its images: it cannot be resumed; discard it and mirror again$`),
        damaged: (what) => new RegExp(`^the checkpoint of "${id}" was damaged \\(${escape(what)}\\): it cannot be resumed; discard it and mirror again$`),
      };
    },
  },
  {
    name: 'sidecar',
    make() {
      const id = `job${jobs++}`;
      const path = join(dir, `${id}.raw.dmcheckpoint`);
      const context = { source: '/d/src.raw', target: '/d/dst.raw', sourceFormat: 'raw' as const, targetFormat: 'raw' as const };
      return {
        id,
        open: (stamps = given(IMAGES)) => new SidecarCheckpointer(path, context, stamps),
        async plant(changes) {
          // As SidecarCheckpointer writes it: JSON, the bitmap in base64.
          const contents = { kind: 'diskmirror-checkpoint', version: 2, ...context, size: MiB, options: checkpoint(id, []).options, status: 'running', savedAt: 1234, bitmap: 'AQID', images: IMAGES, final: false };
          writeFileSync(path, JSON.stringify(withChanges(contents, changes)));
        },
        otherVersion: new RegExp(`^checkpoint ${escape(path)} was written by another version of diskmirror and cannot be resumed; delete it and run the mirror again$`),
        damaged: (what) => new RegExp(`^checkpoint ${escape(path)} is damaged \\(${escape(what)}\\) and cannot be resumed; delete it and run the mirror again$`),
      };
    },
  },
];

function withChanges(record: Record<string, unknown>, changes: Record<string, unknown>): Record<string, unknown> {
  const out = { ...record, ...changes };
  for (const [key, value] of Object.entries(changes)) if (value === undefined) delete out[key];
  return out;
}

async function stored(store: CheckpointStore): Promise<CheckpointRecord | null> {
  return (await store.read())?.record ?? null;
}

describe.each(factories)('the checkpoint store contract: $name', (factory) => {
  it('a save then a read gives it back, and a later save replaces it', async () => {
    const s = factory.make();
    const store = s.open();
    await store.save(checkpoint(s.id, [1, 2, 3]));
    const first = await stored(store);
    expect(first).toMatchObject({ version: 2, size: MiB, options: checkpoint(s.id, []).options, status: 'running', savedAt: 1234, images: IMAGES, final: false });
    expect(first!.bitmap).toEqual(new Uint8Array([1, 2, 3]));
    expect(first!.sourceWriting).toBeUndefined();
    await store.save(checkpoint(s.id, [4, 5], 2345));
    expect(await stored(store)).toMatchObject({ savedAt: 2345, bitmap: new Uint8Array([4, 5]) });
    store.stop();
  });

  it('a record as this version writes it reads back: its fields, its bitmap, its heartbeat', async () => {
    const s = factory.make();
    await s.plant({});
    const read = (await s.open().read())!;
    expect(read.record).toMatchObject({ version: 2, size: MiB, status: 'running', savedAt: 1234, bitmap: new Uint8Array([1, 2, 3]), images: IMAGES, final: false });
    expect(read.writesEndedMs).toBeGreaterThanOrEqual(1234);
    expect(await s.open().read()).toEqual(read);
  });

  it('a seal makes the last save final with the stamps of the closed images, keeping the rest', async () => {
    const s = factory.make();
    const store = s.open();
    await store.save(checkpoint(s.id, [1, 2, 3]));
    expect(await store.seal(CLOSED)).toBe(true);
    expect(await stored(store)).toMatchObject({ final: true, images: CLOSED, savedAt: 1234, status: 'running', bitmap: new Uint8Array([1, 2, 3]) });
  });

  it('a seal with nothing saved by this job stores nothing', async () => {
    const s = factory.make();
    expect(await s.open().seal(CLOSED)).toBe(false);
    expect(await s.open().read()).toBeNull();
    // Nor does it seal the record a resumed job started from: its state since is in none.
    await s.plant({});
    expect(await s.open().seal(CLOSED)).toBe(false);
    expect(await stored(s.open())).toMatchObject({ final: false, images: IMAGES });
  });

  it('a mark sets sourceWriting and keeps the bitmap; the next save is resumable again', async () => {
    const s = factory.make();
    const store = s.open();
    await store.save(checkpoint(s.id, [1, 2, 3]));
    await store.markSourceWriting(s.id);
    expect(await stored(store)).toMatchObject({ sourceWriting: true, final: false, savedAt: 1234, bitmap: new Uint8Array([1, 2, 3]), images: IMAGES });
    await store.markSourceWriting(s.id);
    expect(await stored(store)).toMatchObject({ sourceWriting: true, bitmap: new Uint8Array([1, 2, 3]) });
    await store.save(checkpoint(s.id, [4], 2345));
    const next = await stored(store);
    expect(next).toMatchObject({ savedAt: 2345, bitmap: new Uint8Array([4]) });
    expect(next!.sourceWriting).toBeUndefined();
    store.stop();
  });

  it('a mark by a resumed job, before it saved, marks the record it resumed from', async () => {
    const s = factory.make();
    const first = s.open();
    await first.save(checkpoint(s.id, [7, 8]));
    first.stop();
    const resumed = s.open();
    await resumed.markSourceWriting(s.id);
    expect(await stored(resumed)).toMatchObject({ sourceWriting: true, savedAt: 1234, bitmap: new Uint8Array([7, 8]), final: false });
  });

  it('a mark with nothing stored stores nothing', async () => {
    const s = factory.make();
    const store = s.open();
    await store.markSourceWriting(s.id);
    expect(await store.read()).toBeNull();
  });

  it('remove wins over a save still under way, and nothing after it brings the record back', async () => {
    const s = factory.make();
    let release = () => {};
    const stampsHeld = new Promise<void>((r) => (release = r));
    const store = s.open(async () => {
      await stampsHeld;
      return IMAGES;
    });
    const saving = store.save(checkpoint(s.id, [1]));
    const removing = store.remove(s.id);
    release();
    await Promise.all([saving, removing]);
    expect(await store.read()).toBeNull();
    await store.markSourceWriting(s.id);
    expect(await store.seal(CLOSED)).toBe(false);
    expect(await store.read()).toBeNull();
  });

  it('remove takes a stored record away, and a sealed one', async () => {
    const s = factory.make();
    const store = s.open();
    await store.save(checkpoint(s.id, [1]));
    await store.seal(CLOSED);
    await store.remove(s.id);
    expect(await store.read()).toBeNull();
    expect(await store.seal(CLOSED)).toBe(false);
    expect(await store.read()).toBeNull();
  });

  it('the heartbeat advances while the job runs and stops on stop()', async () => {
    // A clock of whole seconds ahead of the file system's, so a file's modification time is exact.
    const start = Math.ceil(Date.now() / 1000) * 1000 + 60_000;
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'], now: start });
    const s = factory.make();
    const store = s.open();
    await store.save(checkpoint(s.id, [1]));
    const saved = (await store.read())!.writesEndedMs;
    vi.advanceTimersByTime(HEARTBEAT_MS);
    expect((await store.read())!.writesEndedMs).toBe(start + HEARTBEAT_MS);
    expect(start + HEARTBEAT_MS).toBeGreaterThan(saved);
    vi.advanceTimersByTime(3 * HEARTBEAT_MS);
    expect((await store.read())!.writesEndedMs).toBe(start + 4 * HEARTBEAT_MS);
    store.stop();
    vi.advanceTimersByTime(5 * HEARTBEAT_MS);
    expect((await store.read())!.writesEndedMs).toBe(start + 4 * HEARTBEAT_MS);
    // Nor does it bring back a removed record.
    const other = factory.make();
    const removed = other.open();
    await removed.save(checkpoint(other.id, [1]));
    await removed.remove(other.id);
    vi.advanceTimersByTime(2 * HEARTBEAT_MS);
    expect(await removed.read()).toBeNull();
  });

  it('a record of another version is refused with its message', async () => {
    for (const changes of [{ version: 1 }, { images: undefined }, { images: { source: [stamp] } }]) {
      const s = factory.make();
      await s.plant(changes);
      await expect(s.open().read()).rejects.toThrow(s.otherVersion);
    }
  });

  for (const [what, changes, why] of [
    ['a size as text', { size: '1M' }, 'its size'],
    ['no time', { savedAt: undefined }, 'its time'],
    ['a final mark as text', { final: 'yes' }, 'its final mark'],
    ['a mark of source writes as a number', { sourceWriting: 1 }, 'its mark of source writes'],
    ['an image stamp null', { images: { source: [null], target: stamp } }, 'its image stamps'],
    ['no target', { target: undefined }, 'its image names'],
    ['options null', { options: null }, 'its options'],
    ['a granularity of 3000', { options: { ...checkpoint('x', []).options, granularity: 3000 } }, "its options: Parameter 'granularity' expects a power of 2 (got 3000)"],
  ] as const) {
    it(`a damaged record (${what}) is refused, naming what is wrong; a mark leaves it as it is`, async () => {
      const s = factory.make();
      await s.plant(changes);
      await expect(s.open().read()).rejects.toThrow(s.damaged(why));
      await expect(s.open().markSourceWriting(s.id)).rejects.toThrow(s.damaged(why));
      await expect(s.open().read()).rejects.toThrow(s.damaged(why));
    });
  }
});

describe('the IndexedDB store: the list of interrupted jobs', () => {
  it('a damaged record is listed with its problem (not resumable), a whole one with none', async () => {
    const [whole, damaged] = [factories[0]!.make(), factories[0]!.make()];
    await whole.plant({});
    await damaged.plant({ size: -1 });
    const listed = new Map((await listCheckpoints()).map((c) => [c.id, c]));
    expect(unresumable(listed.get(whole.id)!)).toBeNull();
    expect(unresumable(listed.get(damaged.id)!)).toBe('damaged (its size): it cannot be resumed; discard it and mirror again');
  });
});

/** A store in memory whose writes can be held, for the one rule no real store lets a test stop inside. */
class HeldStore extends StoredCheckpoints<CheckpointRecord<string>> {
  value: CheckpointRecord<string> | null = null;
  private entered: (land: () => void) => void = () => {};
  /** Settles once a write is inside put, with what lets it land. */
  readonly writing = new Promise<() => void>((entered) => (this.entered = entered));
  protected record(c: Checkpoint, images: CheckpointImages): CheckpointRecord<string> {
    return { version: 2, source: 's', target: 't', targetFormat: 'raw', size: c.size, options: c.options, status: c.status, savedAt: c.savedAt, bitmap: c.bitmap, images, final: false };
  }
  protected async put(record: CheckpointRecord<string>): Promise<void> {
    await new Promise<void>((landed) => this.entered(landed));
    this.value = record;
  }
  protected async erase(): Promise<void> {
    this.value = null;
  }
  protected async beat(): Promise<void> {}
  async read(): Promise<ReadCheckpoint<CheckpointRecord<string>> | null> {
    return this.value && { record: this.value, writesEndedMs: 0 };
  }
}

describe('the rules every store keeps', () => {
  it('a remove while a record is being written wins: the record that lands after it goes again', async () => {
    const store = new HeldStore(given(IMAGES));
    const saving = store.save(checkpoint('job', [1]));
    const land = await store.writing;
    // The save is inside put: the remove erases what is there, then the write lands.
    await store.remove('job');
    land();
    await saving;
    expect(store.value).toBeNull();
    expect(await store.seal(CLOSED)).toBe(false);
    expect(store.value).toBeNull();
  });
});
