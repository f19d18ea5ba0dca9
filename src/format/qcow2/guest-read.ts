/**
 * Reading guest data (QEMU's qcow2_co_preadv_part): the map walked into
 * runs of one kind, each read from the file, filled with zeroes, read from
 * the backing image or decompressed. The last compressed cluster is kept,
 * so a compressed cluster read in pieces is decompressed once. Also what
 * the metadata alone tells: the block status of this image's own layer
 * (QEMU's qcow2_co_block_status), and ranges known to read as zeroes.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { type BlockStatusKind, FormatError, type ImageFormat } from '../image-format.js';
import type { ClusterMap } from './cluster.js';
import { decompressCluster } from './compress.js';
import { MAX_HOST_OFFSET } from './constants.js';
import type { Qcow2Header } from './header.js';
import { parseCompressed, type SubclusterKind } from './l2-entry.js';

/** What reading needs of the image. */
export interface ReadParts {
  readonly file: BlockDevice;
  readonly header: Qcow2Header;
  readonly map: ClusterMap;
  /** The backing image, if there is one. */
  backing(): ImageFormat | null;
}

type Piece = { offset: number; bytes: number; kind: SubclusterKind; host: number; hi: number; lo: number };

export class Qcow2DataReader {
  private readonly file: BlockDevice;
  private readonly header: Qcow2Header;
  private readonly map: ClusterMap;
  private readonly backing: () => ImageFormat | null;
  private lastCompressed: { hi: number; lo: number; data: Uint8Array } | null = null;

  constructor(parts: ReadParts) {
    this.file = parts.file;
    this.header = parts.header;
    this.map = parts.map;
    this.backing = parts.backing;
  }

  /** Reads guest bytes as the image holds them now (no locks: callers hold what they need). */
  async read(offset: number, into: Uint8Array): Promise<void> {
    const pieces: Piece[] = [];
    await this.map.walk(offset, into.length, (off, bytes, kind, host, hi, lo) => {
      const last = pieces[pieces.length - 1];
      if (last && last.kind === kind && kind === 'normal' && last.host + last.bytes === host) last.bytes += bytes;
      else if (last && last.kind === kind && kind !== 'normal' && kind !== 'compressed') last.bytes += bytes;
      else pieces.push({ offset: off, bytes, kind, host, hi, lo });
      return true;
    });
    for (const p of pieces) {
      const view = into.subarray(p.offset - offset, p.offset - offset + p.bytes);
      switch (p.kind) {
        case 'normal':
          await readPadded(this.file, p.host, view);
          break;
        case 'zero-plain':
        case 'zero-alloc':
          view.fill(0);
          break;
        case 'unallocated-plain':
        case 'unallocated-alloc':
          await this.readBacking(p.offset, view);
          break;
        case 'compressed': {
          const cluster = await this.compressedCluster(p.hi, p.lo, p.offset);
          const within = p.offset % this.header.clusterSize;
          view.set(cluster.subarray(within, within + p.bytes));
          break;
        }
        default:
          throw new FormatError(`qcow2 invalid cluster at guest offset ${p.offset}`, 'l2_entry');
      }
    }
  }

  /**
   * What this image alone holds at `offset`, for at most `bytes` (> 0): the
   * extent's kind and length and, for data stored as it is and contiguously,
   * its host offset. With `contiguous`, data extents also end where the
   * host offset jumps. The caller resolves `unallocated` through the backing chain.
   */
  async status(offset: number, bytes: number, contiguous: boolean): Promise<{ kind: BlockStatusKind; bytes: number; hostOffset?: number }> {
    let kind: BlockStatusKind | null = null;
    let total = 0;
    let host = -1;
    let compressed = false;
    let contiguousHost = true;
    await this.map.walk(offset, bytes, (_off, len, sk, h) => {
      const k = statusKind(sk);
      const isCompressed = sk === 'compressed';
      const pieceHost = k === 'data' && !isCompressed ? h : -1;
      if (kind === null) {
        kind = k;
        host = pieceHost;
        compressed = isCompressed;
      } else {
        if (k !== kind) return false;
        if (k === 'data') {
          const follows = !isCompressed && !compressed && host >= 0 && pieceHost === host + total;
          if (!follows) {
            if (contiguous) return false;
            contiguousHost = false;
          }
        }
      }
      total += len;
      return true;
    });
    const k = (kind as BlockStatusKind | null) ?? 'unallocated';
    return k === 'data' && host >= 0 && contiguousHost ? { kind: k, bytes: total, hostOffset: host } : { kind: k, bytes: total };
  }

  /** Reads from the backing image; past its end, or without one, zeroes. */
  async readBacking(offset: number, into: Uint8Array): Promise<void> {
    const backing = this.backing();
    const inside = backing ? Math.max(0, Math.min(into.length, backing.size - offset)) : 0;
    if (inside > 0) await backing!.read(offset, into.subarray(0, inside));
    if (inside < into.length) into.fill(0, inside);
  }

  private async compressedCluster(hi: number, lo: number, guestOffset: number): Promise<Uint8Array> {
    const last = this.lastCompressed;
    if (last && last.hi === hi && last.lo === lo) return last.data;
    const cs = this.header.clusterSize;
    const d = parseCompressed(hi, lo, this.header.clusterBits);
    if (d.bytes <= 0 || d.hostOffset + d.bytes > MAX_HOST_OFFSET) {
      throw new FormatError(`qcow2 compressed cluster at guest offset ${guestOffset} has a bad descriptor (offset ${d.hostOffset}, ${d.bytes} bytes)`, 'l2_entry');
    }
    if (d.hostOffset < cs) {
      throw new FormatError(`qcow2 compressed cluster at guest offset ${guestOffset} points into the header (offset ${d.hostOffset})`, 'l2_entry');
    }
    const raw = new Uint8Array(d.bytes);
    await readPadded(this.file, d.hostOffset, raw);
    const data = new Uint8Array(cs);
    decompressCluster(this.header.compressionType, raw, data, `at guest offset ${guestOffset - (guestOffset % cs)} (host offset ${d.hostOffset})`);
    this.lastCompressed = { hi, lo, data };
    return data;
  }

  /** True if [offset, offset + bytes) is known to read as zeroes from the metadata alone. */
  async readsAsZero(offset: number, bytes: number): Promise<boolean> {
    let zero = true;
    const backing = this.backing();
    const backingSize = backing ? backing.size : 0;
    await this.map.walk(offset, bytes, (off, len, kind) => {
      if (kind === 'zero-plain' || kind === 'zero-alloc') return true;
      if ((kind === 'unallocated-plain' || kind === 'unallocated-alloc') && off >= backingSize) return true;
      zero = false;
      return false;
    });
    return zero;
  }
}

function statusKind(kind: SubclusterKind): BlockStatusKind {
  switch (kind) {
    case 'normal':
    case 'compressed':
      return 'data';
    case 'zero-plain':
    case 'zero-alloc':
      return 'zero';
    default:
      return 'unallocated';
  }
}

/** Reads `into` from `offset`; what lies past the end of the file reads as zeroes. */
export async function readPadded(file: BlockDevice, offset: number, into: Uint8Array): Promise<void> {
  const inside = Math.max(0, Math.min(into.length, file.size - offset));
  if (inside > 0) await file.read(offset, into.subarray(0, inside));
  if (inside < into.length) into.fill(0, inside);
}
