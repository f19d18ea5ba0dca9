/**
 * Compressed clusters: raw deflate (compression type zlib) and zstd.
 *
 * The stored size is rounded up to 512-byte sectors, so bytes follow the
 * stream: both decoders stop once one cluster has been produced, so a
 * cluster costs one cluster of output (zstd: plus the rest of the block
 * that completes it, at most 128 KiB), whatever the stream would go on to
 * say (a hostile image can point every L2 entry at a stream of a gigabyte
 * of zeroes). QEMU does the same: one inflate() call into a cluster-sized
 * buffer, success when the buffer is full.
 *
 * Deflate is decoded here, by `inflateRawInto` below, rather than by
 * fflate: fflate's one-shot inflateSync keeps decoding past the end of its
 * output buffer, and its streaming Inflate costs an allocation of 160 KiB
 * per push, so pushing pieces small enough to bound the output (about a
 * cluster / 1032, deflate's largest ratio) made ordinary clusters several
 * times slower. zstd is decoded as a stream by fzstd, which reports each
 * block (at most 128 KiB) as it is decoded; a one-shot decode could also
 * fail on the trailing bytes.
 *
 * QEMU writes deflate with a 4 KiB window and inflates the whole cluster in
 * one call, which accepts any distance within the cluster, so fflate's
 * output (32 KiB window) reads back in QEMU, and the decoder below accepts
 * any distance that stays inside the cluster.
 */
import { deflateSync } from 'fflate';
import { Decompress as ZstdDecompress } from 'fzstd';
import { FormatError } from '../image-format.js';
import type { CompressionType } from './constants.js';

/**
 * A platform's own deflate, where it has one (Node's zlib): several times
 * faster than the decoder and encoder here. Its inflate fills `out` exactly
 * and returns the bytes of `data` it read, or null for anything else (a
 * stream that ends early, runs past the cluster, or is damaged): the
 * decoder here then decides, with its own words, so both paths agree.
 */
export interface NativeDeflate {
  inflateRaw(data: Uint8Array, out: Uint8Array): number | null;
  deflateRaw(data: Uint8Array, level: number): Uint8Array;
}

let native: NativeDeflate | null = null;

/** Installs (or, with null, removes) the platform's deflate. */
export function useNativeDeflate(codec: NativeDeflate | null): void {
  native = codec;
}

/**
 * Decompresses one cluster into `out` (exactly one cluster long); throws a
 * FormatError when the data is bad or ends before the cluster is complete.
 * Returns how many bytes of `data` the decoder read: for deflate, the bytes
 * holding the bits it consumed; for zstd, the bytes it was given before the
 * cluster was complete.
 */
export function decompressCluster(type: CompressionType, data: Uint8Array, out: Uint8Array, where: string): number {
  try {
    if (type === 'zlib' && native) {
      const read = native.inflateRaw(data, out);
      if (read !== null) return read;
    }
    return type === 'zlib' ? inflateRawInto(data, out) : zstdCluster(data, out);
  } catch (err) {
    if (err instanceof FormatError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new FormatError(`Compressed cluster ${where} could not be decompressed (${type}): ${message}`, 'compressed_cluster', { cause: err });
  }
}

function zstdCluster(data: Uint8Array, out: Uint8Array): number {
  let produced = 0;
  let fed = 0;
  const done = new Error('cluster complete');
  const stream = new ZstdDecompress((chunk) => {
    const take = Math.min(chunk.length, out.length - produced);
    out.set(chunk.subarray(0, take), produced);
    produced += take;
    if (produced >= out.length) throw done; // stop: the rest is padding
  });
  try {
    // Feed in small pieces so decoding stops soon after one cluster is out.
    const piece = 4096;
    for (let at = 0; at < data.length && produced < out.length; at += piece) {
      fed = Math.min(data.length, at + piece);
      stream.push(data.subarray(at, fed), fed >= data.length);
    }
  } catch (err) {
    if (err !== done && produced < out.length) throw err;
  }
  if (produced < out.length) throw new Error(`the stream ends after ${produced} of ${out.length} bytes`);
  return fed;
}

/** Raw deflate of `data` at level 6 (QEMU's default), with the platform's deflate where there is one (a VMDK grain is stored deflated whatever its size). */
export function deflateRaw(data: Uint8Array): Uint8Array {
  return native ? native.deflateRaw(data, 6) : deflateSync(data, { level: 6 });
}

/** Raw deflate of one cluster (level 6, as QEMU's default); null when it would not save space. */
export function compressCluster(type: CompressionType, data: Uint8Array): Uint8Array | null {
  if (type !== 'zlib') return null;
  const out = deflateRaw(data);
  // QEMU stores a cluster compressed only if it fits in cluster_size - 1 bytes.
  return out.length < data.length ? out : null;
}

// ---------------------------------------------------------------------------
// Raw deflate (RFC 1951) into a fixed buffer.
//
// Codes are read least significant bit first. A Huffman code is decoded
// through a table indexed by the next ROOT_BITS bits (entry: symbol << 4 |
// code length, 0 for "longer than the table, or no such code"); longer codes
// are decoded bit by bit from the canonical counts, as RFC 1951 builds them.
// Keeping the table small bounds the work a block header can cause (a
// stream of tiny blocks, each with 15-bit codes, would otherwise fill 32K
// entries per block). Which code sets are accepted follows zlib (QEMU's
// decoder): no over-subscribed set, and an incomplete one only when it is a
// single one-bit code (or, for distances, no code at all).

const MAX_BITS = 15;
const ROOT_BITS = 9;

/** Lengths for length symbols 257..285, and their extra bits. */
const LENGTH_BASE = Uint16Array.of(3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258);
const LENGTH_EXTRA = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0);
/** Distances for distance symbols 0..29, and their extra bits. */
const DIST_BASE = Uint16Array.of(1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577);
const DIST_EXTRA = Uint8Array.of(0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13);
/** The order in which a dynamic block lists the code lengths of the code length code. */
const CODE_LENGTH_ORDER = Uint8Array.of(16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);

interface HuffmanCode {
  /** Entries for the next `rootBits` bits: symbol << 4 | length, or 0. */
  root: Uint16Array;
  rootMask: number;
  /** Number of codes of each length (index 1..15). */
  count: Uint16Array;
  /** Symbols in canonical order (by length, then by value). */
  symbol: Uint16Array;
}

/**
 * Builds the decoding tables of the code with these code lengths; null when
 * zlib would refuse the set. `incomplete` allows what zlib allows for
 * literal/length and distance codes.
 */
function huffmanCode(lengths: Uint8Array, incomplete: boolean): HuffmanCode | null {
  const count = new Uint16Array(MAX_BITS + 1);
  for (let s = 0; s < lengths.length; s++) count[lengths[s]!]!++;
  count[0] = 0;
  let maxLength = 0;
  for (let len = MAX_BITS; len > 0 && maxLength === 0; len--) if (count[len]! > 0) maxLength = len;
  let left = 1;
  for (let len = 1; len <= MAX_BITS; len++) {
    left = left * 2 - count[len]!;
    if (left < 0) return null; // over-subscribed
  }
  if (maxLength === 0 ? !incomplete : left > 0 && !(incomplete && maxLength === 1)) return null;

  const offsets = new Uint16Array(MAX_BITS + 2);
  for (let len = 1; len <= MAX_BITS; len++) offsets[len + 1] = offsets[len]! + count[len]!;
  const symbol = new Uint16Array(lengths.length);
  for (let s = 0; s < lengths.length; s++) {
    const len = lengths[s]!;
    if (len > 0) symbol[offsets[len]!++] = s;
  }

  const rootBits = Math.max(1, Math.min(ROOT_BITS, maxLength));
  const root = new Uint16Array(1 << rootBits);
  let code = 0;
  let k = 0;
  for (let len = 1; len <= rootBits; len++) {
    for (let c = 0; c < count[len]!; c++, k++, code++) {
      let reversed = 0;
      for (let b = 0; b < len; b++) reversed |= ((code >>> b) & 1) << (len - 1 - b);
      const entry = (symbol[k]! << 4) | len;
      for (let i = reversed; i < root.length; i += 1 << len) root[i] = entry;
    }
    code <<= 1;
  }
  return { root, rootMask: root.length - 1, count, symbol };
}

/** Decodes a code longer than the root table, from `bits` (at least 15 of them); symbol << 4 | length, or 0 for no code. */
function decodeLong(h: HuffmanCode, bits: number): number {
  let code = 0;
  let first = 0;
  let index = 0;
  for (let len = 1; len <= MAX_BITS; len++) {
    code |= (bits >>> (len - 1)) & 1;
    const n = h.count[len]!;
    if (code - n < first) return (h.symbol[index + code - first]! << 4) | len;
    index += n;
    first = (first + n) << 1;
    code <<= 1;
  }
  return 0;
}

let fixedCodes: { literal: HuffmanCode; distance: HuffmanCode } | undefined;

function fixed(): { literal: HuffmanCode; distance: HuffmanCode } {
  if (!fixedCodes) {
    const lengths = new Uint8Array(288);
    lengths.fill(8, 0, 144).fill(9, 144, 256).fill(7, 256, 280).fill(8, 280, 288);
    fixedCodes = { literal: huffmanCode(lengths, false)!, distance: huffmanCode(new Uint8Array(32).fill(5), false)! };
  }
  return fixedCodes;
}

/**
 * Inflates the raw deflate stream in `data` into `out`, stopping as soon as
 * `out` is full: the work is bounded by `out.length` bytes of output and
 * one pass over `data`, whatever the stream holds further on. Returns the
 * number of bytes of `data` read (those holding the bits consumed). Throws
 * when the stream is invalid, or when it or `data` ends before `out` is full.
 */
export function inflateRawInto(data: Uint8Array, out: Uint8Array): number {
  return new Inflater(data, out).run();
}

type CodesStop = 'full' | 'end of block' | 'ends early' | 'invalid literal/length code' | 'invalid distance code' | 'invalid distance too far back';

class Inflater {
  /** Next byte of data to load into bitBuf; bytes past the end load as zeroes (see checkEnd). */
  private pos = 0;
  /** Loaded bits not yet consumed, least significant first (at most 27: bit 31 stays clear). */
  private bitBuf = 0;
  private bitCount = 0;
  private produced = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly out: Uint8Array,
  ) {}

  run(): number {
    if (this.out.length === 0) return 0;
    for (;;) {
      const header = this.take(3);
      this.checkEnd();
      const type = header >>> 1;
      if (type === 0) {
        if (this.stored()) return this.pos;
      } else if (type === 1) {
        const { literal, distance } = fixed();
        if (this.codes(literal, distance)) return this.consumed();
      } else if (type === 2) {
        const { literal, distance } = this.dynamicCodes();
        if (this.codes(literal, distance)) return this.consumed();
      } else {
        throw new Error('invalid block type');
      }
      if (header & 1) throw this.endsEarly(); // the last block ended before out is full
    }
  }

  /** Bytes of data holding the bits consumed so far. */
  private consumed(): number {
    return this.pos - (this.bitCount >>> 3);
  }

  private endsEarly(): Error {
    return new Error(`the stream ends after ${this.produced} of ${this.out.length} bytes`);
  }

  /** Fails once a bit past the end of data has been consumed. */
  private checkEnd(): void {
    if (this.pos > this.data.length && this.pos * 8 - this.bitCount > this.data.length * 8) throw this.endsEarly();
  }

  private need(bits: number): void {
    while (this.bitCount < bits) {
      this.bitBuf |= (this.pos < this.data.length ? this.data[this.pos]! : 0) << this.bitCount;
      this.pos++;
      this.bitCount += 8;
    }
  }

  private take(bits: number): number {
    this.need(bits);
    const value = this.bitBuf & ((1 << bits) - 1);
    this.bitBuf >>>= bits;
    this.bitCount -= bits;
    return value;
  }

  /** A stored block: to a byte boundary, LEN and NLEN, then LEN bytes as they are. True when out is full. */
  private stored(): boolean {
    const { data, out } = this;
    this.bitCount -= this.bitCount & 7;
    this.pos -= this.bitCount >>> 3;
    this.bitBuf = 0;
    this.bitCount = 0;
    let pos = this.pos;
    if (pos + 4 > data.length) throw this.endsEarly();
    const len = data[pos]! | (data[pos + 1]! << 8);
    const nlen = data[pos + 2]! | (data[pos + 3]! << 8);
    pos += 4;
    if (len !== (~nlen & 0xffff)) throw new Error(`invalid stored block lengths (${len}, ${nlen})`);
    const copy = Math.min(len, out.length - this.produced, data.length - pos);
    out.set(data.subarray(pos, pos + copy), this.produced);
    this.produced += copy;
    this.pos = pos + copy;
    if (this.produced === out.length) return true;
    if (copy < len) throw this.endsEarly();
    return false;
  }

  private decode(h: HuffmanCode): number {
    this.need(MAX_BITS);
    const entry = h.root[this.bitBuf & h.rootMask]! || decodeLong(h, this.bitBuf);
    this.bitBuf >>>= entry & 15;
    this.bitCount -= entry & 15;
    return entry;
  }

  /** The header of a dynamic block: the code length code, then the two codes' lengths. */
  private dynamicCodes(): { literal: HuffmanCode; distance: HuffmanCode } {
    const nLiteral = this.take(5) + 257;
    const nDistance = this.take(5) + 1;
    const nCodeLength = this.take(4) + 4;
    if (nLiteral > 286 || nDistance > 30) throw new Error(`too many length or distance symbols (${nLiteral}, ${nDistance})`);
    const codeLengths = new Uint8Array(19);
    for (let i = 0; i < nCodeLength; i++) codeLengths[CODE_LENGTH_ORDER[i]!] = this.take(3);
    this.checkEnd();
    const lengthCode = huffmanCode(codeLengths, false);
    if (!lengthCode) throw new Error('invalid code lengths set');
    const lengths = new Uint8Array(nLiteral + nDistance);
    for (let i = 0; i < lengths.length; ) {
      const entry = this.decode(lengthCode);
      this.checkEnd();
      if (entry === 0) throw new Error('invalid code lengths set');
      const sym = entry >>> 4;
      if (sym < 16) {
        lengths[i++] = sym;
        continue;
      }
      let value = 0;
      let repeat: number;
      if (sym === 16) {
        if (i === 0) throw new Error('invalid bit length repeat');
        value = lengths[i - 1]!;
        repeat = 3 + this.take(2);
      } else if (sym === 17) {
        repeat = 3 + this.take(3);
      } else {
        repeat = 11 + this.take(7);
      }
      this.checkEnd();
      if (i + repeat > lengths.length) throw new Error('invalid bit length repeat');
      lengths.fill(value, i, i + repeat);
      i += repeat;
    }
    if (lengths[256] === 0) throw new Error('invalid code -- missing end-of-block');
    const literal = huffmanCode(lengths.subarray(0, nLiteral), true);
    if (!literal) throw new Error('invalid literal/lengths set');
    const distance = huffmanCode(lengths.subarray(nLiteral), true);
    if (!distance) throw new Error('invalid distances set');
    return { literal, distance };
  }

  /**
   * The symbols of one block, up to its end-of-block code (false) or until
   * out is full (true). The hot loop: state lives in locals, refills inline.
   */
  private codes(literal: HuffmanCode, distance: HuffmanCode): boolean {
    const { data, out } = this;
    const end = data.length;
    const size = out.length;
    const litRoot = literal.root;
    const litMask = literal.rootMask;
    const distRoot = distance.root;
    const distMask = distance.rootMask;
    let pos = this.pos;
    let bitBuf = this.bitBuf;
    let bitCount = this.bitCount;
    let produced = this.produced;
    let stop: CodesStop;
    for (;;) {
      while (bitCount < MAX_BITS) {
        bitBuf |= (pos < end ? data[pos]! : 0) << bitCount;
        pos++;
        bitCount += 8;
      }
      let entry = litRoot[bitBuf & litMask]!;
      if (entry === 0) entry = decodeLong(literal, bitBuf);
      const sym = entry >>> 4;
      bitBuf >>>= entry & 15;
      bitCount -= entry & 15;
      if (pos > end && pos * 8 - bitCount > end * 8) {
        stop = 'ends early';
        break;
      }
      if (entry === 0 || sym > 285) {
        stop = 'invalid literal/length code';
        break;
      }
      if (sym < 256) {
        out[produced++] = sym;
        if (produced === size) {
          stop = 'full';
          break;
        }
        continue;
      }
      if (sym === 256) {
        stop = 'end of block';
        break;
      }
      // A length (3..258), then a distance (1..32768).
      let length = LENGTH_BASE[sym - 257]!;
      const lengthExtra = LENGTH_EXTRA[sym - 257]!;
      // Up to 5 extra bits, then a distance code of up to 15 bits.
      while (bitCount < 20) {
        bitBuf |= (pos < end ? data[pos]! : 0) << bitCount;
        pos++;
        bitCount += 8;
      }
      length += bitBuf & ((1 << lengthExtra) - 1);
      bitBuf >>>= lengthExtra;
      bitCount -= lengthExtra;
      let distEntry = distRoot[bitBuf & distMask]!;
      if (distEntry === 0) distEntry = decodeLong(distance, bitBuf);
      const distSym = distEntry >>> 4;
      bitBuf >>>= distEntry & 15;
      bitCount -= distEntry & 15;
      if (distEntry === 0 || distSym > 29) {
        stop = 'invalid distance code';
        break;
      }
      const distExtra = DIST_EXTRA[distSym]!;
      while (bitCount < distExtra) {
        bitBuf |= (pos < end ? data[pos]! : 0) << bitCount;
        pos++;
        bitCount += 8;
      }
      const dist = DIST_BASE[distSym]! + (bitBuf & ((1 << distExtra) - 1));
      bitBuf >>>= distExtra;
      bitCount -= distExtra;
      if (pos > end && pos * 8 - bitCount > end * 8) {
        stop = 'ends early';
        break;
      }
      if (dist > produced) {
        stop = 'invalid distance too far back';
        break;
      }
      const last = Math.min(size, produced + length);
      if (dist === 1 && last - produced >= 16) {
        out.fill(out[produced - 1]!, produced, last); // a run of one byte
        produced = last;
      } else if (dist < 32 || last - produced < 32) {
        for (let from = produced - dist; produced < last; ) out[produced++] = out[from++]!;
      } else {
        // In pieces of at most `dist` bytes, each copied from bytes already out.
        while (produced < last) {
          const piece = Math.min(dist, last - produced);
          out.copyWithin(produced, produced - dist, produced - dist + piece);
          produced += piece;
        }
      }
      if (produced === size) {
        stop = 'full';
        break;
      }
    }
    this.pos = pos;
    this.bitBuf = bitBuf;
    this.bitCount = bitCount;
    this.produced = produced;
    if (stop === 'full') return true;
    if (stop === 'end of block') return false;
    throw stop === 'ends early' ? this.endsEarly() : new Error(stop);
  }
}
