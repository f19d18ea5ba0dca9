/**
 * VHDX inputs for the fuzzer, packed: an image is megabytes of mostly
 * zeroes with a few small structures at fixed places (headers at 64 and
 * 128 KiB, region tables at 192 and 256 KiB, the BAT and the metadata past
 * 1 MiB), where the fuzzer's mutations (most of them in an input's first
 * 4 KiB) would never reach. Packed, the structures come first, each a
 * record (offset u32, length u16, bytes), after a flags byte (bit 0: make
 * the headers' and region tables' CRC-32C good again, to reach the fields
 * behind them) and the file's size (u32). Unpacking lays the records out
 * in a zeroed file.
 */
import { putChecksum } from '../src/format/vhdx/header.js';

const KiB = 1024;
/** Largest file an input unpacks to. */
const MAX_FILE_BYTES = 24 << 20;

/** The structures of a VHDX image worth mutating, packed (`blocks`: how many payload blocks' first 4 KiB to keep). */
export function packVhdx(file: Uint8Array, fixChecksums: boolean): Uint8Array {
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  const rt = 192 * KiB;
  const region = (i: number) => ({ offset: Number(view.getBigUint64(rt + 16 + i * 32 + 16, true)), bytes: view.getUint32(rt + 16 + i * 32 + 24, true) });
  const [bat, metadata] = [region(0), region(1)];
  const pieces: [number, number][] = [
    [0, 8],
    [64 * KiB, 80],
    [128 * KiB, 80],
    [rt, 16 + 2 * 32],
    [256 * KiB, 16 + 2 * 32],
    [metadata.offset, 32 + 5 * 32],
    [metadata.offset + 64 * KiB, 40],
    [bat.offset, 16 * 8],
  ];
  for (let i = 0; i < 16; i++) {
    const entry = view.getBigUint64(bat.offset + i * 8, true);
    const at = Number(entry & ~0xfffffn);
    if ((entry & 7n) === 6n && at + 4 * KiB <= file.length) pieces.push([at, 4 * KiB]);
  }
  const out: number[] = [fixChecksums ? 1 : 0, ...u32(file.length)];
  for (const [at, bytes] of pieces) out.push(...u32(at), bytes & 0xff, bytes >> 8, ...file.subarray(at, at + bytes));
  return new Uint8Array(out);
}

function u32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

/** The file a packed input describes. */
export function unpackVhdx(input: Uint8Array): Uint8Array {
  if (input.length < 5) return new Uint8Array(0);
  const view = new DataView(input.buffer, input.byteOffset, input.length);
  const file = new Uint8Array(Math.min(view.getUint32(1, true), MAX_FILE_BYTES));
  for (let p = 5; p + 6 <= input.length; ) {
    const at = view.getUint32(p, true);
    const bytes = Math.min(view.getUint16(p + 4, true), input.length - p - 6);
    if (at < file.length) file.set(input.subarray(p + 6, p + 6 + Math.min(bytes, file.length - at)), at);
    p += 6 + bytes;
  }
  if (input[0]! & 1) {
    for (const [at, bytes] of [
      [64 * KiB, 4 * KiB],
      [128 * KiB, 4 * KiB],
      [192 * KiB, 64 * KiB],
      [256 * KiB, 64 * KiB],
    ] as const) {
      if (at + bytes <= file.length) putChecksum(file.subarray(at, at + bytes), 4);
    }
  }
  return file;
}
