/**
 * The VHDX log: a circular buffer of 4 KiB sectors holding entries (a
 * header, descriptors, data sectors, one CRC-32C over all of them) that
 * journal metadata writes. A header whose log GUID is zero has nothing to
 * replay. Otherwise the log is searched as qemu-img searches it (the valid
 * entries, each with the header's log GUID and its checksum right, the
 * sequence with the highest number), and a valid sequence is replayed: its
 * data and zero descriptors written to the file, flushed, then the headers
 * updated with a zero log GUID. Like qemu-img, an image open read-only
 * with a log to replay is refused, and a log entry whose descriptors are
 * malformed makes the image unreadable.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { crc32cUpdate } from '../../util/crc32c.js';
import { FormatError } from '../image-format.js';
import {
  LD_FILE_OFFSET,
  LD_LEADING_BYTES,
  LD_SEQUENCE,
  LD_TRAILING_BYTES,
  LD_ZERO_LENGTH,
  LDS_DATA,
  LDS_DATA_BYTES,
  LDS_SEQUENCE_HIGH,
  LDS_SEQUENCE_LOW,
  LE_CHECKSUM,
  LE_DESCRIPTOR_COUNT,
  LE_ENTRY_LENGTH,
  LE_FLUSHED_FILE_OFFSET,
  LE_LAST_FILE_OFFSET,
  LE_LOG_GUID,
  LE_SEQUENCE,
  LOG_DESC_SIGNATURE,
  LOG_DESCRIPTOR_BYTES,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR_BYTES,
  LOG_ZERO_SIGNATURE,
  MiB,
} from './constants.js';
import { type VhdxHeader, ascii, randomGuid, writeNextHeader } from './header.js';

/** How far a replay may grow the file past its size (a hostile log must not make a huge file). */
const MAX_REPLAY_GROWTH = 1024 * MiB;

/** The log's sectors, read from the file on demand (zeroes past its end, as a file reads there). */
class LogReader {
  constructor(
    private readonly file: BlockDevice,
    readonly offset: number,
    readonly length: number,
  ) {}
  async sector(index: number): Promise<Uint8Array> {
    const out = new Uint8Array(LOG_SECTOR_BYTES);
    const at = this.offset + index * LOG_SECTOR_BYTES;
    if (at < this.file.size) await this.file.read(at, out.subarray(0, Math.min(LOG_SECTOR_BYTES, this.file.size - at)));
    return out;
  }
  get sectors(): number {
    return this.length / LOG_SECTOR_BYTES;
  }
}

interface Descriptor {
  zero: boolean;
  fileOffset: number;
  /** Zero descriptors: bytes of zeroes. */
  zeroLength: number;
  leading: Uint8Array;
  trailing: Uint8Array;
  sequence: bigint;
}

interface Entry {
  /** The sector the entry starts at, and the one after it. */
  start: number;
  next: number;
  sequence: bigint;
  flushedFileOffset: bigint;
  lastFileOffset: bigint;
  descriptors: Descriptor[];
}

function u64n(view: DataView, at: number): bigint {
  return view.getBigUint64(at, true);
}

/**
 * The entry at sector `start`, if valid (`after`: the sequence number it
 * must follow, 0n for any); `next` tells where the search goes on.
 */
async function readEntry(log: LogReader, start: number, logGuid: Uint8Array, after: bigint): Promise<{ entry: Entry | null; next: number }> {
  const wrap = (s: number) => s % log.sectors;
  const first = await log.sector(start);
  const view = new DataView(first.buffer);
  const entryLength = view.getUint32(LE_ENTRY_LENGTH, true);
  const sequence = u64n(view, LE_SEQUENCE);
  const count = view.getUint32(LE_DESCRIPTOR_COUNT, true);
  const headerValid =
    ascii(first, 0, 4) === LOG_ENTRY_SIGNATURE &&
    entryLength <= log.length &&
    entryLength % LOG_SECTOR_BYTES === 0 &&
    sequence !== 0n &&
    first.subarray(LE_LOG_GUID, LE_LOG_GUID + 16).every((b, i) => b === logGuid[i]) &&
    count * LOG_DESCRIPTOR_BYTES <= entryLength &&
    (after === 0n || sequence === after + 1n);
  if (!headerValid) return { entry: null, next: wrap(start + 1) };
  const descSectors = Math.ceil((count + 2) / 128);
  const totalSectors = entryLength / LOG_SECTOR_BYTES;
  const descriptors: Descriptor[] = [];
  // The checksum covers the entry with its own field taken as zero.
  const stored = view.getUint32(LE_CHECKSUM, true);
  let crc = 0xffffffff;
  for (let s = 0; s < descSectors; s++) {
    const sector = s === 0 ? first.slice() : await log.sector(wrap(start + s));
    if (s === 0) new DataView(sector.buffer).setUint32(LE_CHECKSUM, 0, true);
    crc = crc32cUpdate(crc, sector);
    const sv = new DataView(sector.buffer);
    for (let d = s === 0 ? 2 : 0; d < 128 && descriptors.length < count; d++) {
      const at = d * LOG_DESCRIPTOR_BYTES;
      const signature = ascii(sector, at, 4);
      const desc: Descriptor = {
        zero: signature === LOG_ZERO_SIGNATURE,
        fileOffset: Number(u64n(sv, at + LD_FILE_OFFSET)),
        zeroLength: Number(u64n(sv, at + LD_ZERO_LENGTH)),
        leading: sector.slice(at + LD_LEADING_BYTES, at + LD_LEADING_BYTES + 8),
        trailing: sector.slice(at + LD_TRAILING_BYTES, at + LD_TRAILING_BYTES + 4),
        sequence: u64n(sv, at + LD_SEQUENCE),
      };
      const valid =
        desc.sequence === sequence &&
        desc.fileOffset % LOG_SECTOR_BYTES === 0 &&
        ((desc.zero && desc.zeroLength % LOG_SECTOR_BYTES === 0) || signature === LOG_DESC_SIGNATURE);
      // qemu-img fails to open the image here, whatever the checksum says.
      if (!valid) throw new FormatError(`vhdx log entry ${sequence} at log sector ${start} has a malformed descriptor ${descriptors.length}`, 'log');
      descriptors.push(desc);
    }
  }
  for (let s = descSectors; s < totalSectors; s++) crc = crc32cUpdate(crc, await log.sector(wrap(start + s)));
  const next = wrap(start + Math.max(descSectors, totalSectors));
  if (((crc ^ 0xffffffff) >>> 0) !== stored) return { entry: null, next };
  return { entry: { start, next, sequence, flushedFileOffset: u64n(view, LE_FLUSHED_FILE_OFFSET), lastFileOffset: u64n(view, LE_LAST_FILE_OFFSET), descriptors }, next };
}

/** The valid sequence of entries with the highest sequence number, as qemu-img's search finds it, or none. */
async function searchLog(log: LogReader, logGuid: Uint8Array): Promise<Entry[]> {
  let best: Entry[] = [];
  let read = 0;
  for (;;) {
    const tail = read;
    const found = await readEntry(log, read, logGuid, 0n);
    read = found.next;
    if (found.entry) {
      const run = [found.entry];
      for (;;) {
        const more = await readEntry(log, read, logGuid, run.length > 1 ? run[run.length - 1]!.sequence : 0n);
        read = more.next;
        if (!more.entry) break;
        run.push(more.entry);
      }
      if (best.length === 0 || run[0]!.sequence > best[0]!.sequence) best = run;
    }
    // (qemu-img stops when the read index wraps; an entry that fills the whole log would bring it back where it was)
    if (read <= tail) break;
  }
  return best;
}

/**
 * Replays the log of `header` if it holds a valid sequence; returns the
 * header that is current afterwards, or null when there was nothing to do.
 */
export async function replayLog(file: BlockDevice, header: VhdxHeader, readOnly: boolean): Promise<VhdxHeader | null> {
  const log = new LogReader(file, header.logOffset, header.logLength);
  const entries = await searchLog(log, header.logGuid);
  if (entries.length === 0) return null;
  if (readOnly) {
    throw new FormatError('vhdx image opened read-only, but contains a log that needs to be replayed: to replay it, run diskmirror check -r all IMAGE (or qemu-img check -r all)', 'log');
  }
  const limit = file.size + MAX_REPLAY_GROWTH;
  for (const entry of entries) {
    if (entry.flushedFileOffset > BigInt(file.size)) throw new FormatError(`vhdx log entry ${entry.sequence} says the file had ${entry.flushedFileOffset} bytes flushed, more than its ${file.size}: the image is truncated`, 'log');
    if (entry.lastFileOffset > BigInt(limit)) throw new FormatError(`vhdx log entry ${entry.sequence} field last_file_offset is ${entry.lastFileOffset}: far past the end of the file`, 'log');
    let data = entry.start + Math.ceil((entry.descriptors.length + 2) / 128);
    for (const desc of entry.descriptors) {
      const bytes = desc.zero ? desc.zeroLength : LOG_SECTOR_BYTES;
      if (desc.fileOffset + bytes > limit) throw new FormatError(`vhdx log entry ${entry.sequence} writes at ${desc.fileOffset}, far past the end of the file`, 'log');
      if (desc.zero) {
        const zeroes = new Uint8Array(Math.min(bytes, MiB));
        for (let done = 0; done < bytes; done += zeroes.length) await file.write(desc.fileOffset + done, zeroes.subarray(0, Math.min(zeroes.length, bytes - done)));
        continue;
      }
      const sector = await log.sector(data % log.sectors);
      data++;
      const sv = new DataView(sector.buffer);
      const sequence = (BigInt(sv.getUint32(LDS_SEQUENCE_HIGH, true)) << 32n) | BigInt(sv.getUint32(LDS_SEQUENCE_LOW, true));
      if (sequence !== desc.sequence) throw new FormatError(`vhdx log entry ${entry.sequence} has a data sector of sequence ${sequence}`, 'log');
      const out = new Uint8Array(LOG_SECTOR_BYTES);
      out.set(desc.leading, 0);
      out.set(sector.subarray(LDS_DATA, LDS_DATA + LDS_DATA_BYTES), 8);
      out.set(desc.trailing, 8 + LDS_DATA_BYTES);
      await file.write(desc.fileOffset, out);
    }
    // As qemu-img: a file shorter than the entry's last offset grows to the next MiB (when that offset is not on one).
    const last = Number(entry.lastFileOffset);
    if (file.size < last && last % MiB !== 0 && file.resize) await file.resize(Math.ceil(last / MiB) * MiB);
  }
  await file.flush();
  const zero = new Uint8Array(16);
  const fileWriteGuid = randomGuid();
  let current = header;
  for (let i = 0; i < 2; i++) current = await writeNextHeader(file, current, { fileWriteGuid, dataWriteGuid: randomGuid(), logGuid: zero });
  return current;
}
