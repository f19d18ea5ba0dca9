/**
 * A bounded write-back cache of metadata tables (L2 tables, refcount
 * blocks), one cluster each, as QEMU's qcow2-cache.c.
 *
 * Ordering is expressed as dependencies between caches: "before any dirty
 * table of this cache reaches the disk, flush that other cache" (a new data
 * cluster's refcount must be durable before the L2 entry that points at it;
 * a dropped reference must be durable before the refcount is decremented).
 *
 * Discipline for callers: take a table with `get`, change it and call
 * `markDirty` without awaiting in between (an await can evict it).
 */
import { FormatError } from '../image-format.js';

/** What the cache needs from the image file. */
export interface MetadataIo {
  /** Reads a table; bytes past the end of the file read as zeroes. */
  read(offset: number, into: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

interface Entry {
  data: Uint8Array;
  dirty: boolean;
}

export class MetadataCache {
  private readonly entries = new Map<number, Entry>();
  private readonly loading = new Map<number, Promise<Uint8Array>>();
  private dependency: MetadataCache | null = null;
  private flushing: Promise<void> | null = null;
  /** Counts, for tests and tuning. */
  hits = 0;
  misses = 0;

  constructor(
    private readonly io: MetadataIo,
    readonly name: string,
    readonly tableBytes: number,
    /** Most tables kept (at least 2). */
    readonly maxEntries: number,
  ) {
    if (maxEntries < 2) throw new RangeError('a metadata cache needs room for at least 2 tables');
  }

  get size(): number {
    return this.entries.size;
  }

  get dirtyCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.dirty) n++;
    return n;
  }

  /** The table at `offset` if cached (no I/O), refreshing its place in the LRU order. */
  peek(offset: number): Uint8Array | undefined {
    const e = this.entries.get(offset);
    if (!e) return undefined;
    this.entries.delete(offset);
    this.entries.set(offset, e);
    this.hits++;
    return e.data;
  }

  /** The table at `offset`, read from the file if needed. */
  async get(offset: number): Promise<Uint8Array> {
    const cached = this.peek(offset);
    if (cached) return cached;
    const pending = this.loading.get(offset);
    if (pending) return pending;
    this.misses++;
    const load = (async () => {
      const data = new Uint8Array(this.tableBytes);
      await this.io.read(offset, data);
      await this.makeRoom();
      // Someone may have installed a fresh table meanwhile (a new L2 table): keep theirs.
      const now = this.entries.get(offset);
      if (now) return now.data;
      this.entries.set(offset, { data, dirty: false });
      return data;
    })();
    this.loading.set(offset, load);
    try {
      return await load;
    } finally {
      this.loading.delete(offset);
    }
  }

  /** Installs a table that is already on disk as `data` (clean), or to be written (dirty). */
  async install(offset: number, data: Uint8Array, dirty: boolean): Promise<void> {
    if (data.length !== this.tableBytes) throw new RangeError(`${this.name} table of ${data.length} bytes`);
    if (!this.entries.has(offset)) await this.makeRoom();
    this.entries.delete(offset);
    this.entries.set(offset, { data, dirty });
  }

  markDirty(offset: number): void {
    const e = this.entries.get(offset);
    if (!e) throw new FormatError(`internal: ${this.name} table at ${offset} marked dirty while not cached`);
    e.dirty = true;
  }

  /** Forgets a table (its cluster was freed); a dirty one is dropped unwritten. */
  forget(offset: number): void {
    this.entries.delete(offset);
  }

  /** From now on, `other` is flushed before any of our dirty tables is written. */
  async dependOn(other: MetadataCache): Promise<void> {
    if (this.dependency === other) return;
    // Break cycles as QEMU does: what the dependency itself depends on is flushed first.
    if (other.dependency) await other.flushDependency();
    if (this.dependency && this.dependency !== other) await this.flushDependency();
    this.dependency = other;
  }

  get dependsOn(): MetadataCache | null {
    return this.dependency;
  }

  /** Writes every dirty table (after the dependency), then flushes the file. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    const run = (async () => {
      await this.flushDependency();
      await this.writeDirty();
      await this.io.flush();
    })();
    this.flushing = run;
    try {
      await run;
    } finally {
      this.flushing = null;
    }
  }

  /** Writes dirty tables without flushing the file (the dependency is flushed first). */
  async writeBack(): Promise<void> {
    await this.flushDependency();
    await this.writeDirty();
  }

  /** Drops everything (after close or a failed open). */
  clear(): void {
    this.entries.clear();
    this.dependency = null;
  }

  async flushDependency(): Promise<void> {
    const dep = this.dependency;
    if (!dep) return;
    await dep.flush();
    if (this.dependency === dep) this.dependency = null;
  }

  private async writeDirty(): Promise<void> {
    const dirty = [...this.entries.entries()].filter(([, e]) => e.dirty).sort((a, b) => a[0] - b[0]);
    for (const [offset, e] of dirty) {
      // Clear first: a change made while the write runs marks it dirty again.
      e.dirty = false;
      try {
        await this.io.write(offset, e.data.slice());
      } catch (err) {
        e.dirty = true;
        throw err;
      }
    }
  }

  /** Evicts the least recently used clean table; writes dirty ones back when all are dirty. */
  private async makeRoom(): Promise<void> {
    while (this.entries.size >= this.maxEntries) {
      let victim: number | undefined;
      for (const [offset, e] of this.entries) {
        if (!e.dirty) {
          victim = offset;
          break;
        }
      }
      if (victim === undefined) {
        await this.writeBack();
        continue;
      }
      this.entries.delete(victim);
    }
  }
}
