/**
 * Crashes by enumeration, in the spirit of SQLite's crash-test VFS and
 * CrashMonkey: every write, discard, resize and flush that reaches a file is
 * recorded in one log shared by all the files of a run (and the durable
 * records the run stores beside them, its checkpoints), so that the disk can
 * be rebuilt as a crash after any prefix of that log would leave it.
 *
 * Two models:
 * - `kill`: the process dies. Everything handed to the file reaches it (the
 *   operating system has it); what only the process held in memory (a
 *   qcow2's cached L2 tables and refcount blocks) is lost.
 * - `power`: the machine loses power. What a file's last flush covered is
 *   there; each change since may be lost, kept, or (a write) kept in part,
 *   512-byte sector by sector. A file's modification time is the time of
 *   the last change that survived, in part or whole: nothing outside the
 *   bytes tells that a lost write was ever made.
 *
 * Each file's modification time is the index of its last surviving change
 * in the log, so a stamp taken at a checkpoint can be compared with the
 * file after the crash as a front end compares them.
 */
import { type BlockDevice, type FileIdentity, checkDeviceRequest, closedError } from '../../src/block/block-device.js';
import { rng } from './random.js';

export type CrashModel = 'kill' | 'power';

type Change = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'discard'; offset: number; bytes: number } | { kind: 'resize'; bytes: number };

type LogEntry<R> = { file: string; change: Change } | { file: string; flush: true } | { record: R };

/** One file after a crash: its bytes, and when it last changed (a log index; -1: never since the run began). */
export interface CrashedFile {
  bytes: Uint8Array;
  modified: number;
}

export interface Crash<R> {
  files: Map<string, CrashedFile>;
  /** The durable records stored before the crash, oldest first. */
  records: R[];
}

const SECTOR = 512;

export class CrashLog<R = unknown> {
  readonly entries: LogEntry<R>[] = [];
  private readonly bases = new Map<string, Uint8Array>();
  private readonly watchers: ((length: number) => void)[] = [];

  /** A file of this run, starting as `base`. */
  file(name: string, base: Uint8Array): CrashFile {
    if (this.bases.has(name)) throw new Error(`${name} is already a file of this run`);
    this.bases.set(name, base.slice());
    return new CrashFile(this, name, base);
  }

  /** A record stored durably now (a checkpoint written, fsynced and renamed into place). */
  record(record: R): void {
    this.append({ record });
  }

  /** Calls `watch` after every entry with the log's length. */
  watch(watch: (length: number) => void): void {
    this.watchers.push(watch);
  }

  get length(): number {
    return this.entries.length;
  }

  /** @internal */
  append(entry: LogEntry<R>): void {
    this.entries.push(entry);
    for (const w of this.watchers) w(this.entries.length);
  }

  /**
   * The files as a crash after the first `cut` entries leaves them. In a
   * power loss, `fates` decides what became of each unflushed change
   * (default: every one lost).
   */
  crash(cut: number, model: CrashModel, fates: Fates = allLost): Crash<R> {
    if (!Number.isSafeInteger(cut) || cut < 0 || cut > this.entries.length) throw new RangeError(`cut ${cut} outside the log (0..${this.entries.length})`);
    const lastFlush = new Map<string, number>();
    for (let i = 0; i < cut; i++) {
      const e = this.entries[i]!;
      if ('flush' in e) lastFlush.set(e.file, i);
    }
    const files = new Map<string, { bytes: Uint8Array; length: number; modified: number }>();
    for (const [name, base] of this.bases) files.set(name, { bytes: base.slice(), length: base.length, modified: -1 });
    const records: R[] = [];
    for (let i = 0; i < cut; i++) {
      const e = this.entries[i]!;
      if ('record' in e) {
        records.push(e.record);
        continue;
      }
      if ('flush' in e) continue;
      const file = files.get(e.file)!;
      const durable = model === 'kill' || i < (lastFlush.get(e.file) ?? -1);
      const fate = durable ? 'whole' : fates.fate(e.file, i);
      if (fate === 'lost') continue;
      if (apply(file, e.change, fate === 'part' ? fates.sector : null)) file.modified = i;
    }
    const out = new Map<string, CrashedFile>();
    for (const [name, f] of files) out.set(name, { bytes: f.bytes.slice(0, f.length), modified: f.modified });
    return { files: out, records };
  }
}

/** What a power loss did to each unflushed change: lost, kept whole, or kept in part (sectors drawn by `sector`). */
export interface Fates {
  fate(file: string, index: number): 'lost' | 'whole' | 'part';
  sector(): number;
}

export const allLost: Fates = { fate: () => 'lost', sector: () => 0 };

/** Each change lost, kept or torn at random, from `seed`. */
export function randomFates(seed: number): Fates {
  const next = rng(seed);
  return { fate: () => (['lost', 'whole', 'part'] as const)[Math.floor(next() * 3)]!, sector: next };
}

/** The changes of the files named lost, the others' kept whole (the cruellest split between two disks). */
export function lostOn(...files: string[]): Fates {
  return { fate: (file) => (files.includes(file) ? 'lost' : 'whole'), sector: () => 0 };
}

/** Applies a change to a rebuilt file; with `part`, a write lands sector by sector at random. True if anything of it landed. */
function apply(file: { bytes: Uint8Array; length: number }, change: Change, part: (() => number) | null): boolean {
  const grow = (end: number) => {
    if (end > file.bytes.length) {
      const grown = new Uint8Array(Math.max(end, file.bytes.length * 2));
      grown.set(file.bytes.subarray(0, file.length));
      file.bytes = grown;
    }
    if (end > file.length) file.length = end;
  };
  switch (change.kind) {
    case 'resize':
      if (change.bytes < file.length) file.bytes.fill(0, change.bytes, file.length);
      grow(change.bytes);
      file.length = change.bytes;
      return true;
    case 'discard':
      file.bytes.fill(0, change.offset, Math.min(file.length, change.offset + change.bytes));
      return true;
    case 'write': {
      const { offset, data } = change;
      if (!part) {
        grow(offset + data.length);
        file.bytes.set(data, offset);
        return true;
      }
      let any = false;
      // Sectors of the file: a torn write keeps some whole sectors, old or new.
      for (let at = offset; at < offset + data.length; ) {
        const end = Math.min(offset + data.length, (Math.floor(at / SECTOR) + 1) * SECTOR);
        if (part() < 0.5) {
          grow(end);
          file.bytes.set(data.subarray(at - offset, end - offset), at);
          any = true;
        }
        at = end;
      }
      return any;
    }
  }
}

/**
 * A file of a crash run: bytes in memory, every change and flush logged.
 * Each operation first yields to the event loop once, so concurrent I/O
 * interleaves as it does on a real disk (and the same way every run).
 */
export class CrashFile implements BlockDevice {
  private buf: Uint8Array;
  private length: number;
  private closed = false;
  private lastChange = -1;

  constructor(
    private readonly log: CrashLog<never> | CrashLog<unknown>,
    readonly name: string,
    base: Uint8Array,
  ) {
    this.buf = base.slice();
    this.length = base.length;
  }

  get size(): number {
    return this.length;
  }

  get readOnly(): boolean {
    return false;
  }

  /** The bytes now (as the process sees them). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    await turn();
    if (this.closed) throw closedError('read', offset, into.length);
    checkDeviceRequest('read', offset, into.length, this.length, true);
    into.set(this.buf.subarray(offset, offset + into.length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await turn();
    if (this.closed) throw closedError('write', offset, data.length);
    checkDeviceRequest('write', offset, data.length, this.length, false);
    this.change({ kind: 'write', offset, data: data.slice() });
    this.ensure(offset + data.length);
    this.buf.set(data, offset);
  }

  async discard(offset: number, bytes: number): Promise<void> {
    await turn();
    if (this.closed) throw closedError('discard', offset, bytes);
    checkDeviceRequest('discard', offset, bytes, this.length, false);
    this.change({ kind: 'discard', offset, bytes });
    this.buf.fill(0, offset, Math.min(offset + bytes, this.length));
  }

  async resize(bytes: number): Promise<void> {
    await turn();
    if (this.closed) throw closedError('resize', 0, bytes);
    checkDeviceRequest('resize', 0, bytes, 0, false);
    this.change({ kind: 'resize', bytes });
    if (bytes < this.length) this.buf.fill(0, bytes, this.length);
    this.ensure(bytes);
    this.length = bytes;
  }

  async flush(): Promise<void> {
    await turn();
    if (this.closed) throw closedError('flush', 0, 0);
    (this.log as CrashLog<unknown>).append({ file: this.name, flush: true });
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** The file's identity now: its modification time is the log index of its last change. */
  async identity(): Promise<FileIdentity> {
    return { key: `crash:${this.name}`, size: this.length, modifiedMs: this.lastChange };
  }

  private change(change: Change): void {
    this.lastChange = this.log.length;
    (this.log as CrashLog<unknown>).append({ file: this.name, change });
  }

  private ensure(end: number): void {
    if (end > this.buf.length) {
      const grown = new Uint8Array(Math.max(end, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    if (end > this.length) this.length = end;
  }
}

/** The identity of a file rebuilt after a crash, as `CrashFile.identity` would have said it. */
export function crashedIdentity(name: string, file: CrashedFile): FileIdentity {
  return { key: `crash:${name}`, size: file.bytes.length, modifiedMs: file.modified };
}

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
