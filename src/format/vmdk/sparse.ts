/**
 * One sparse extent: its grain directory read whole at open (every entry
 * checked), grain tables read as needed through a small cache, grains
 * found, read (inflated when compressed) and allocated.
 *
 * A new grain goes to the end of the file (grain-aligned; compressed grains
 * packed in whole sectors after the previous one), is written whole,
 * flushed, and only then entered in the grain table and its redundant
 * copy: a kill before the entry leaves the disk as it was, with at most a
 * grain past the end that nothing points at (the next allocation starts
 * after it, as QEMU's rounds the file's end up).
 */
import { type BlockDevice, BlockError } from '../../block/block-device.js';
import { FormatError } from '../image-format.js';
import { decompressCluster, deflateRaw } from '../qcow2/compress.js';
import { GRAIN_MARKER_BYTES, GTE_BYTES, GTE_ZEROED, SECTOR_BYTES } from './constants.js';
import { type SparseHeader, readSparseHeader } from './header.js';

/** Where a grain is: nowhere, zeroes (a zero-grain entry), stored as is at `host`, or compressed behind a marker at `host`. */
export type Grain = { kind: 'unallocated' } | { kind: 'zero' } | { kind: 'data'; host: number } | { kind: 'compressed'; host: number };

/** Grain tables kept in memory (each at most 2 KiB). */
const GT_CACHE_TABLES = 512;

function readTable(bytes: Uint8Array): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Uint32Array(bytes.length / GTE_BYTES);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(i * GTE_BYTES, true);
  return out;
}

function adler32(data: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length; ) {
    const end = Math.min(data.length, i + 5552);
    for (; i < end; i++) {
      a += data[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** A zlib stream of `data` (what QEMU's compress() writes: header 0x78 0x9c, deflate, Adler-32). */
export function zlibCompress(data: Uint8Array): Uint8Array {
  const raw = deflateRaw(data);
  const out = new Uint8Array(raw.length + 6);
  out[0] = 0x78;
  out[1] = 0x9c;
  out.set(raw, 2);
  new DataView(out.buffer).setUint32(raw.length + 2, adler32(data), false);
  return out;
}

export class SparseExtent {
  readonly bytes: number;
  readonly grainBytes: number;
  private readonly tableBytes: number;
  private readonly cache = new Map<number, Uint32Array>();
  /** Where the next grain goes. */
  private next: number;

  private constructor(
    readonly file: BlockDevice,
    readonly header: SparseHeader,
    private readonly gd: Uint32Array,
    private readonly rgd: Uint32Array | null,
    readonly name: string,
  ) {
    this.bytes = header.capacitySectors * SECTOR_BYTES;
    this.grainBytes = header.grainSectors * SECTOR_BYTES;
    this.tableBytes = header.gtesPerGt * GTE_BYTES;
    this.next = Math.ceil(file.size / this.grainBytes) * this.grainBytes;
  }

  static async open(file: BlockDevice, writable: boolean, name: string): Promise<SparseExtent> {
    const header = await readSparseHeader(file, writable);
    const readDirectory = async (offset: number): Promise<Uint32Array> => {
      const raw = new Uint8Array(header.gdEntries * GTE_BYTES);
      await file.read(offset, raw);
      return readTable(raw);
    };
    // Entries are checked where they are used: a table past the end of the file reads as zeroes (as QEMU's), one is never written there.
    const gd = await readDirectory(header.gdOffset);
    const rgd = header.rgdOffset ? await readDirectory(header.rgdOffset) : null;
    return new SparseExtent(file, header, gd, rgd, name);
  }

  get compressed(): boolean {
    return this.header.compressed;
  }

  private async table(sector: number): Promise<Uint32Array> {
    const hit = this.cache.get(sector);
    if (hit) {
      this.cache.delete(sector);
      this.cache.set(sector, hit);
      return hit;
    }
    const raw = new Uint8Array(this.tableBytes);
    await this.readStored(sector * SECTOR_BYTES, raw);
    // Loaded meanwhile (and maybe changed by an allocation since): the cached table is the current one.
    const loaded = this.cache.get(sector);
    if (loaded) return loaded;
    const table = readTable(raw);
    if (this.cache.size >= GT_CACHE_TABLES) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(sector, table);
    return table;
  }

  private indexes(offset: number): { gdIndex: number; gtIndex: number } {
    const grain = Math.floor(offset / this.grainBytes);
    return { gdIndex: Math.floor(grain / this.header.gtesPerGt), gtIndex: grain % this.header.gtesPerGt };
  }

  /** The grain holding `offset` (bytes into the extent). */
  async lookup(offset: number): Promise<Grain> {
    const { gdIndex, gtIndex } = this.indexes(offset);
    const gtSector = this.gd[gdIndex];
    if (gtSector === undefined) throw new FormatError(`vmdk offset ${offset} is past the grain directory of ${this.name} (${this.gd.length} entries)`, 'grain directory');
    if (gtSector === 0) return { kind: 'unallocated' };
    const entry = (await this.table(gtSector))[gtIndex]!;
    if (entry === 0) return { kind: 'unallocated' };
    if (entry === GTE_ZEROED && this.header.hasZeroGrain) return { kind: 'zero' };
    // A grain past the end of the file reads as zeroes, as in QEMU (check reports it).
    const host = entry * SECTOR_BYTES;
    return this.header.compressed ? { kind: 'compressed', host } : { kind: 'data', host };
  }

  /**
   * The grain holding `offset` and how many bytes from `offset` (at most
   * `maxBytes`) read the same way: unallocated, zero, or data (with
   * `contiguous`, data stored contiguously in the file). A grain table
   * that is not there is skipped in one step.
   */
  async run(offset: number, maxBytes: number, contiguous: boolean): Promise<{ grain: Grain; bytes: number }> {
    const grain = await this.lookup(offset);
    const kind = grain.kind === 'compressed' ? 'data' : grain.kind;
    const host = grain.kind === 'data' ? grain.host + (offset % this.grainBytes) : undefined;
    const end = offset + maxBytes;
    const span = this.grainBytes * this.header.gtesPerGt;
    let at = Math.min(end, offset - (offset % this.grainBytes) + this.grainBytes);
    while (at < end) {
      const { gdIndex, gtIndex } = this.indexes(at);
      const gtSector = this.gd[gdIndex];
      if (gtSector === undefined) break;
      if (gtSector === 0) {
        if (kind !== 'unallocated') break;
        at = Math.min(end, (gdIndex + 1) * span);
        continue;
      }
      const table = await this.table(gtSector);
      let i = gtIndex;
      for (; i < table.length && at < end; i++, at = Math.min(end, at + this.grainBytes)) {
        const entry = table[i]!;
        const k = entry === 0 ? 'unallocated' : entry === GTE_ZEROED && this.header.hasZeroGrain ? 'zero' : 'data';
        if (k !== kind) return { grain, bytes: at - offset };
        if (host !== undefined && contiguous && entry * SECTOR_BYTES !== host + (at - offset)) return { grain, bytes: at - offset };
      }
      if (i < table.length) break;
    }
    return { grain, bytes: at - offset };
  }

  /** Reads [at, at + into.length) of a stored grain (not crossing it) from the file; bytes past the file's end read as zeroes, as QEMU's. */
  async readStored(host: number, into: Uint8Array): Promise<void> {
    const inFile = Math.max(0, Math.min(into.length, this.file.size - host));
    if (inFile > 0) await this.file.read(host, into.subarray(0, inFile));
    into.fill(0, inFile);
  }

  /** The grain inflated last (reads of a grain in pieces inflate it once). */
  private inflated: { host: number; data: Uint8Array } | null = null;

  /** Inflates the compressed grain at `host` holding extent offset `grainStart`. */
  async readCompressed(host: number, grainStart: number): Promise<Uint8Array> {
    if (this.inflated?.host === host) return this.inflated.data;
    const data = await this.inflate(host, grainStart);
    this.inflated = { host, data };
    return data;
  }

  private async inflate(host: number, grainStart: number): Promise<Uint8Array> {
    const buffer = new Uint8Array(2 * this.grainBytes);
    await this.readStored(host, buffer);
    let data = buffer;
    const where = `at ${host} (offset ${grainStart}) of ${this.name}`;
    if (this.header.hasMarker) {
      const size = new DataView(buffer.buffer).getUint32(8, true);
      if (size === 0 || size > buffer.length - GRAIN_MARKER_BYTES) throw new FormatError(`vmdk compressed grain ${where} has a marker of size ${size}`, 'grain marker');
      data = buffer.subarray(GRAIN_MARKER_BYTES, GRAIN_MARKER_BYTES + size);
    } else {
      data = buffer.subarray(0, this.grainBytes);
    }
    const cmf = data[0]!;
    const flg = data[1]!;
    if ((cmf & 0x0f) !== 8 || (cmf * 256 + flg) % 31 !== 0 || flg & 0x20) throw new FormatError(`vmdk compressed grain ${where} is no zlib stream`, 'compressed grain');
    const out = new Uint8Array(Math.min(this.grainBytes, this.bytes - grainStart));
    decompressCluster('zlib', data.subarray(2), out, where);
    return out;
  }

  /**
   * Gives the grain holding `offset` a place at the end of the file, with
   * `data` at `offset` (zeroes around it; compressed: the whole grain),
   * then enters it in both grain tables.
   */
  async allocate(offset: number, data: Uint8Array): Promise<void> {
    const { gdIndex, gtIndex } = this.indexes(offset);
    const gtSector = this.gd[gdIndex]!;
    if (gtSector === 0) throw new FormatError(`vmdk grain directory entry ${gdIndex} of ${this.name} has no grain table: diskmirror does not add grain tables`, 'grain directory');
    const backup = this.rgd?.[gdIndex] ?? 0;
    for (const [sector, field] of [[gtSector, 'grain directory'], [backup, 'redundant grain directory']] as const) {
      const at = sector * SECTOR_BYTES;
      if (sector !== 0 && (at < SECTOR_BYTES || at + this.tableBytes > this.file.size)) {
        throw new FormatError(`vmdk ${field} entry ${gdIndex} of ${this.name} is sector ${sector}: a grain table there is not inside the file (${this.file.size} bytes); not written`, field);
      }
    }
    const grainStart = offset - (offset % this.grainBytes);
    let start = Math.max(this.next, Math.ceil(this.file.size / SECTOR_BYTES) * SECTOR_BYTES);
    let stored: Uint8Array;
    if (this.header.compressed) {
      const compressed = zlibCompress(data);
      stored = new Uint8Array(Math.ceil((GRAIN_MARKER_BYTES + compressed.length) / SECTOR_BYTES) * SECTOR_BYTES);
      const view = new DataView(stored.buffer);
      view.setUint32(0, (grainStart / SECTOR_BYTES) >>> 0, true);
      view.setUint32(4, Math.floor(grainStart / SECTOR_BYTES / 2 ** 32), true);
      view.setUint32(8, compressed.length, true);
      stored.set(compressed, GRAIN_MARKER_BYTES);
    } else {
      start = Math.ceil(start / this.grainBytes) * this.grainBytes;
      stored = new Uint8Array(this.grainBytes);
      stored.set(data, offset - grainStart);
    }
    if ((start + stored.length) / SECTOR_BYTES > 2 ** 32) throw new BlockError('EFBIG', 'write', offset, data.length, `vmdk extent ${this.name} is full (grains are addressed by 32-bit sectors)`);
    await this.file.write(start, stored);
    await this.file.flush();
    const entry = new Uint8Array(GTE_BYTES);
    new DataView(entry.buffer).setUint32(0, start / SECTOR_BYTES, true);
    await this.file.write(gtSector * SECTOR_BYTES + gtIndex * GTE_BYTES, entry);
    if (backup) await this.file.write(backup * SECTOR_BYTES + gtIndex * GTE_BYTES, entry);
    // The table in memory says it too (loaded if it had left the cache, so a load under way cannot bring back the old entry).
    (await this.table(gtSector))[gtIndex] = start / SECTOR_BYTES;
    this.next = this.header.compressed ? start + stored.length : start + this.grainBytes;
  }

  /** Every grain table entry, in guest order, for check (tables read one at a time). */
  async forEachEntry(each: (grainIndex: number, entry: number, gtSector: number) => void): Promise<void> {
    for (let gdIndex = 0; gdIndex < this.gd.length; gdIndex++) {
      const gtSector = this.gd[gdIndex]!;
      if (gtSector === 0) continue;
      const table = await this.table(gtSector);
      table.forEach((entry, i) => each(gdIndex * this.header.gtesPerGt + i, entry, gtSector));
    }
  }
}
