/**
 * Big-endian fields, as everything on disk in qcow2 is: 32-bit values
 * in a byte array, 64-bit values as a JS number (offsets and sizes, whose
 * range the callers check) through a DataView, and a 64-bit bit pattern
 * from its two 32-bit halves as a BigInt (for messages that print it whole).
 */
import { FormatError } from '../image-format.js';

/** The 32-bit value at `at`. */
export function u32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

/** Stores the 32-bit `value` at `at`. */
export function putU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

/** The 64-bit value at `at` as a number (exact below 2^53). */
export function getU64(view: DataView, at: number): number {
  return view.getUint32(at, false) * 2 ** 32 + view.getUint32(at + 4, false);
}

/**
 * The 64-bit header field `field` at `at` as a number; refuses (FormatError
 * naming the field) a value a JS number cannot represent exactly, or above `max`.
 */
export function getU64Checked(view: DataView, at: number, field: string, max = Number.MAX_SAFE_INTEGER): number {
  const hi = view.getUint32(at, false);
  const lo = view.getUint32(at + 4, false);
  const value = hi * 2 ** 32 + lo;
  if (hi >= 2 ** 21 || value > max) {
    throw new FormatError(`qcow2 header field ${field} is ${bigU64(hi, lo)}: too large`, field);
  }
  return value;
}

/** Stores `value` (a non-negative integer below 2^64) as 64 bits at `at`. */
export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 2 ** 32), false);
  view.setUint32(at + 4, value >>> 0, false);
}

/** The 64-bit value whose halves are `hi` (bits 32..63) and `lo` (bits 0..31), exactly. */
export function bigU64(hi: number, lo: number): bigint {
  return BigInt(hi) * 2n ** 32n + BigInt(lo);
}
