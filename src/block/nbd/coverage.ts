/**
 * Which bytes of a read its reply chunks answered. Chunks may come in any
 * order but must not overlap (the specification forbids it), so a read is
 * whole when every byte was answered exactly once; counting bytes is not
 * enough (the same chunk twice would pass for the whole read).
 *
 * Chunks that come in order, each where the last ended (as qemu-nbd and
 * nbdkit send them), cost a number. The first one out of order starts a
 * bitmap of the read's bytes, one bit a byte: at most 4 MiB for a 32 MiB
 * read, and only for a server that answers out of order.
 */
export class ReadCoverage {
  /** Bytes answered from the start, while the chunks come in order. */
  private frontier = 0;
  private bits: Uint8Array | null = null;
  /** Bytes answered so far. */
  covered = 0;

  constructor(readonly length: number) {}

  /** Records [at, at + bytes) of the read (at counted from its start); false when part of it was answered already. */
  add(at: number, bytes: number): boolean {
    if (!this.bits) {
      if (at === this.frontier) {
        this.frontier += bytes;
        this.covered += bytes;
        return true;
      }
      this.bits = new Uint8Array(Math.ceil(this.length / 8));
      mark(this.bits, 0, this.frontier);
    }
    if (anyMarked(this.bits, at, at + bytes)) return false;
    mark(this.bits, at, at + bytes);
    this.covered += bytes;
    return true;
  }

  get whole(): boolean {
    return this.covered === this.length;
  }
}

/** Whole bytes of the bitmap inside [start, end) bits: [first, last) (empty when the range sits inside one byte). */
function wholeBytes(start: number, end: number): [number, number] {
  const first = Math.ceil(start / 8);
  return [first, Math.max(first, Math.floor(end / 8))];
}

function anyMarked(bits: Uint8Array, start: number, end: number): boolean {
  const [first, last] = wholeBytes(start, end);
  for (let i = start; i < Math.min(end, first * 8); i++) if (bits[i >>> 3]! & (1 << (i & 7))) return true;
  for (let b = first; b < last; b++) if (bits[b]) return true;
  for (let i = Math.max(start, last * 8); i < end; i++) if (bits[i >>> 3]! & (1 << (i & 7))) return true;
  return false;
}

function mark(bits: Uint8Array, start: number, end: number): void {
  const [first, last] = wholeBytes(start, end);
  for (let i = start; i < Math.min(end, first * 8); i++) bits[i >>> 3]! |= 1 << (i & 7);
  bits.fill(0xff, first, last);
  for (let i = Math.max(start, last * 8); i < end; i++) bits[i >>> 3]! |= 1 << (i & 7);
}
