/**
 * A serialized dirty bitmap in proportion to what is dirty. The plain form
 * (version 1: a 16-byte header, then level 0's words) is 16 MiB for an
 * 8 TiB image at 64 KiB granularity, clean or not; the compact form
 * (version 2) lists the runs of dirty chunks instead, so a clean or nearly
 * clean job's checkpoint takes a few bytes and a fully dirty one too.
 * `compactBitmap` keeps whichever form is smaller; `expandBitmap` gives the
 * plain form back, checking every field (a checkpoint is read from disk).
 *
 * Version 2: u32 magic "DMBM", u32 2, f64 chunks, f64 bytes of the plain
 * form; then LEB128 pairs (clean chunks before the run, dirty chunks in it).
 */
const MAGIC = 0x4d42_4d44;
const PLAIN_HEADER = 16;
const COMPACT_HEADER = 24;

class Writer {
  bytes = new Uint8Array(64);
  length = 0;

  uint(n: number): void {
    if (this.length + 10 > this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    while (n >= 0x80) {
      this.bytes[this.length++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.bytes[this.length++] = n;
  }
}

/** The smaller of the plain form `plain` and its runs. */
export function compactBitmap(plain: Uint8Array): Uint8Array {
  const dv = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  const chunks = dv.getFloat64(8, true);
  const bits = plain.subarray(PLAIN_HEADER);
  const w = new Writer();
  w.length = COMPACT_HEADER;
  let inRun = false;
  let runStart = 0;
  let lastEnd = 0;
  for (let byte = 0; byte < bits.length; byte++) {
    const b = bits[byte]!;
    // Whole bytes that continue what is going on cost one compare.
    if ((!inRun && b === 0) || (inRun && b === 0xff)) continue;
    for (let k = 0; k < 8; k++) {
      const bit = byte * 8 + k;
      if (bit >= chunks) break;
      const set = (b >> k) & 1;
      if (set && !inRun) {
        inRun = true;
        runStart = bit;
      } else if (!set && inRun) {
        inRun = false;
        w.uint(runStart - lastEnd);
        w.uint(bit - runStart);
        lastEnd = bit;
      }
    }
    // A run may stop being smaller than the plain form: give up early.
    if (w.length >= plain.length) return plain;
  }
  if (inRun) {
    const end = Math.min(chunks, bits.length * 8);
    w.uint(runStart - lastEnd);
    w.uint(end - runStart);
  }
  if (w.length >= plain.length) return plain;
  const out = w.bytes.slice(0, w.length);
  const odv = new DataView(out.buffer);
  odv.setUint32(0, MAGIC, true);
  odv.setUint32(4, 2, true);
  odv.setFloat64(8, chunks, true);
  odv.setFloat64(16, plain.length, true);
  return out;
}

/** The plain form of a serialized bitmap (either form); a bad compact one is refused, naming what is wrong. */
export function expandBitmap(data: Uint8Array): Uint8Array {
  // Anything but the compact form is returned as it is: the plain form's reader checks it.
  if (data.byteLength < COMPACT_HEADER) return data;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== 2) return data;
  const chunks = dv.getFloat64(8, true);
  const plainBytes = dv.getFloat64(16, true);
  if (!Number.isSafeInteger(chunks) || chunks < 0 || !Number.isSafeInteger(plainBytes) || plainBytes < PLAIN_HEADER + Math.ceil(chunks / 8) || plainBytes > PLAIN_HEADER + Math.ceil(chunks / 8) + 64) {
    throw new RangeError(`serialized bitmap: ${chunks} chunks in ${plainBytes} bytes is not a bitmap`);
  }
  const plain = new Uint8Array(plainBytes);
  plain.set(data.subarray(0, PLAIN_HEADER));
  const pdv = new DataView(plain.buffer);
  pdv.setUint32(4, 1, true);
  const bits = plain.subarray(PLAIN_HEADER);
  for (const [start, end] of runs(data, chunks)) {
    let c = start;
    while (c < end && c & 7) bits[c >>> 3]! |= 1 << (c++ & 7);
    if (c + 8 <= end) {
      bits.fill(0xff, c >>> 3, (end >>> 3));
      c = end - (end & 7);
    }
    while (c < end) bits[c >>> 3]! |= 1 << (c++ & 7);
  }
  return plain;
}

/** The runs [start, end) of dirty chunks in a compact form, each checked. */
function* runs(data: Uint8Array, chunks: number): Generator<[number, number]> {
  let at = COMPACT_HEADER;
  const uint = (): number => {
    let n = 0;
    let scale = 1;
    for (;;) {
      if (at >= data.byteLength) throw new RangeError('serialized bitmap: a run is cut short');
      const b = data[at++]!;
      n += (b & 0x7f) * scale;
      if (!(b & 0x80)) return n;
      scale *= 0x80;
      if (scale > 2 ** 56) throw new RangeError('serialized bitmap: a run length is too long');
    }
  };
  let pos = 0;
  while (at < data.byteLength) {
    const start = pos + uint();
    const end = start + uint();
    if (end > chunks || end <= start) throw new RangeError(`serialized bitmap: a run [${start}, ${end}) is empty or past the ${chunks} chunks`);
    yield [start, end];
    pos = end;
  }
}

/** How many chunks a serialized bitmap (either form) has dirty, without expanding a compact one. */
export function dirtyChunks(data: Uint8Array): number {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.byteLength >= COMPACT_HEADER && dv.getUint32(0, true) === MAGIC && dv.getUint32(4, true) === 2) {
    let n = 0;
    for (const [start, end] of runs(data, dv.getFloat64(8, true))) n += end - start;
    return n;
  }
  let n = 0;
  for (let i = PLAIN_HEADER; i < data.length; i++) {
    let b = data[i]!;
    while (b) {
      n += b & 1;
      b >>= 1;
    }
  }
  return n;
}
