/*
 * Zero detection over a buffer in linear memory, 128 bytes per step with
 * v128 loads: eight loads OR-ed together, one any_true test, so the loop
 * costs about one instruction per 16 bytes and leaves at the first non-zero
 * block.
 */

/** True when the `len` bytes at `ptr` are all zero. */
export function isZero(ptr: usize, len: usize): bool {
  let p = ptr;
  const end = ptr + len;
  while (p + 128 <= end) {
    const a = v128.or(v128.load(p), v128.load(p, 16));
    const b = v128.or(v128.load(p, 32), v128.load(p, 48));
    const c = v128.or(v128.load(p, 64), v128.load(p, 80));
    const d = v128.or(v128.load(p, 96), v128.load(p, 112));
    if (v128.any_true(v128.or(v128.or(a, b), v128.or(c, d)))) return false;
    p += 128;
  }
  while (p + 16 <= end) {
    if (v128.any_true(v128.load(p))) return false;
    p += 16;
  }
  while (p < end) {
    if (load<u8>(p) != 0) return false;
    p++;
  }
  return true;
}

/**
 * Splits `len` bytes at `ptr` into blocks of `blockBytes` and writes one byte
 * per block at `out`: 1 when the block is all zero, else 0. Returns how many
 * blocks were zero. The last block may be short.
 */
export function zeroBlocks(ptr: usize, len: usize, blockBytes: usize, out: usize): u32 {
  let zeros: u32 = 0;
  let i: usize = 0;
  for (let off: usize = 0; off < len; off += blockBytes) {
    const n = off + blockBytes <= len ? blockBytes : len - off;
    const z = isZero(ptr + off, n);
    store<u8>(out + i, z ? 1 : 0);
    if (z) zeros++;
    i++;
  }
  return zeros;
}
