/**
 * The internal snapshot table: read (to list snapshots, and so check can
 * count the clusters their L1 tables reach). The active state is all a
 * reader needs; a writer copies shared clusters before changing them.
 */
import { FormatError } from '../image-format.js';
import { getU64 } from './bytes.js';
import type { MetadataIo } from './cache.js';
import { MAX_SNAPSHOT_EXTRA_DATA_BYTES, MAX_SNAPSHOT_TABLE_BYTES, SNAPSHOT_HEADER_BYTES } from './constants.js';
import type { Qcow2Header } from './header.js';

export interface Snapshot {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Size: number;
  dateSeconds: number;
  vmStateBytes: number;
  /** Bytes of extra data (version 3 wants at least 16: the large VM state size and the disk size). */
  extraBytes: number;
  /** Guest size when the snapshot was taken (extra data; the image's size if absent). */
  diskBytes?: number;
}

export interface SnapshotTable {
  snapshots: Snapshot[];
  /** Bytes the table takes. */
  bytes: number;
}

/** Reads the table (what lies past the end of the file reads as zeroes, as in QEMU). */
export async function readSnapshots(io: MetadataIo, header: Qcow2Header): Promise<SnapshotTable> {
  const snapshots: Snapshot[] = [];
  if (header.nbSnapshots === 0) return { snapshots, bytes: 0 };
  let offset = header.snapshotsOffset;
  const fixed = new Uint8Array(SNAPSHOT_HEADER_BYTES);
  const view = new DataView(fixed.buffer);
  for (let i = 0; i < header.nbSnapshots; i++) {
    if (offset - header.snapshotsOffset + SNAPSHOT_HEADER_BYTES > MAX_SNAPSHOT_TABLE_BYTES) {
      throw new FormatError(`qcow2 snapshot table is larger than ${MAX_SNAPSHOT_TABLE_BYTES} bytes`, 'snapshots_offset');
    }
    await io.read(offset, fixed);
    const l1TableOffset = getU64(view, 0);
    const l1Size = view.getUint32(8, false);
    const idBytes = view.getUint16(12, false);
    const nameBytes = view.getUint16(14, false);
    const dateSeconds = view.getUint32(16, false);
    const vmStateBytes = view.getUint32(32, false);
    const extraBytes = view.getUint32(36, false);
    if (extraBytes > MAX_SNAPSHOT_EXTRA_DATA_BYTES) {
      throw new FormatError(`qcow2 snapshot ${i} extra_data_size is ${extraBytes} (at most ${MAX_SNAPSHOT_EXTRA_DATA_BYTES})`, 'snapshot_extra_data_size');
    }
    // An L1 size or offset that is too large is left for check to report (QEMU's check does the same).
    const varBytes = extraBytes + idBytes + nameBytes;
    const rest = new Uint8Array(varBytes);
    await io.read(offset + SNAPSHOT_HEADER_BYTES, rest);
    const sn: Snapshot = {
      id: new TextDecoder().decode(rest.subarray(extraBytes, extraBytes + idBytes)),
      name: new TextDecoder().decode(rest.subarray(extraBytes + idBytes, varBytes)),
      l1TableOffset,
      l1Size,
      dateSeconds,
      vmStateBytes,
      extraBytes,
    };
    if (extraBytes >= 16) sn.diskBytes = getU64(new DataView(rest.buffer), 8);
    snapshots.push(sn);
    offset += Math.ceil((SNAPSHOT_HEADER_BYTES + varBytes) / 8) * 8;
    if (offset - header.snapshotsOffset > MAX_SNAPSHOT_TABLE_BYTES) {
      throw new FormatError(`qcow2 snapshot table is larger than ${MAX_SNAPSHOT_TABLE_BYTES} bytes`, 'snapshots_offset');
    }
  }
  return { snapshots, bytes: offset - header.snapshotsOffset };
}
