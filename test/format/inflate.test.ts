/**
 * The raw-deflate decoder of compressed clusters against zlib (QEMU's
 * decoder), on seeded data: every stream zlib writes (all levels, window
 * sizes and strategies, stored, fixed and dynamic blocks) decodes to the
 * same bytes; the decoder stops where the output is full, reads no further
 * than the bits it needs, and fails exactly when zlib fails to fill the
 * output (damaged streams, truncated streams, streams that end early).
 */
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { deflateSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { decompressCluster, inflateRawInto } from '../../src/format/qcow2/compress.js';
import { FormatError } from '../../src/format/image-format.js';
import { randInt, rng } from '../helpers/random.js';
import { mixedData } from './qcow2-images.js';

/** Data of one kind: random, zeroes, a small alphabet, a slowly varying pattern, or mixed 4 KiB blocks. */
function sample(bytes: number, next: () => number): Uint8Array {
  const out = new Uint8Array(bytes);
  switch (randInt(next, 5)) {
    case 0:
      for (let i = 0; i < bytes; i++) out[i] = randInt(next, 256);
      break;
    case 1:
      break;
    case 2:
      for (let i = 0; i < bytes; i++) out[i] = 65 + randInt(next, 4);
      break;
    case 3:
      for (let i = 0; i < bytes; i++) out[i] = ((i * 7) ^ (next() < 0.01 ? 1 : 0)) & 255;
      break;
    default:
      out.set(mixedData(bytes, randInt(next, 1000)));
  }
  return out;
}

/** What QEMU's inflate into a buffer of `bytes` yields: the bytes, or null when it cannot fill it. */
function zlibCluster(stream: Uint8Array, bytes: number): Uint8Array | null {
  const tryPrefix = (n: number): Buffer | null => {
    try {
      return inflateRawSync(stream.subarray(0, n), { finishFlush: constants.Z_SYNC_FLUSH });
    } catch {
      return null;
    }
  };
  let whole = tryPrefix(stream.length);
  if (!whole) {
    // zlib stops at the first bad code: what it produced before is the longest prefix it accepts.
    let lo = 0;
    let hi = stream.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (tryPrefix(mid)) lo = mid;
      else hi = mid - 1;
    }
    whole = tryPrefix(lo)!;
  }
  return whole.length >= bytes ? new Uint8Array(whole.subarray(0, bytes)) : null;
}

function ours(stream: Uint8Array, bytes: number): Uint8Array | null {
  const out = new Uint8Array(bytes);
  try {
    inflateRawInto(stream, out);
    return out;
  } catch {
    return null;
  }
}

describe('raw deflate decoder', () => {
  it('decodes what zlib writes, at every level, window size and strategy, and reads only the bits it needs', () => {
    const next = rng(1);
    for (let t = 0; t < 400; t++) {
      const bytes = [512, 4096, 65536, 100_000][t % 4]!;
      const data = sample(bytes, next);
      const options = { level: randInt(next, 10), windowBits: 9 + randInt(next, 7), memLevel: 1 + randInt(next, 9), strategy: randInt(next, 5) };
      const stream = deflateRawSync(data, options);
      const padding = new Uint8Array(randInt(next, 600)).map(() => randInt(next, 256));
      const stored = new Uint8Array([...stream, ...padding]);
      const out = new Uint8Array(bytes);
      const read = inflateRawInto(stored, out);
      const what = `case ${t} ${JSON.stringify(options)}`;
      expect(Buffer.compare(out, data), what).toBe(0);
      // The end-of-block code after the last byte may be left unread.
      expect(read, what).toBeLessThanOrEqual(stream.length);
      expect(read, what).toBeGreaterThanOrEqual(stream.length - 3);

      // Asked for less, it stops there.
      const part = 1 + randInt(next, bytes);
      const head = new Uint8Array(part);
      expect(inflateRawInto(stream, head), what).toBeLessThanOrEqual(read);
      expect(Buffer.compare(head, data.subarray(0, part)), what).toBe(0);

      // A stream cut short, or one that ends before the buffer is full, is an error.
      const cut = randInt(next, read);
      expect(() => inflateRawInto(stream.subarray(0, cut), new Uint8Array(bytes)), `${what} cut at ${cut}`).toThrow(/ends after/);
      expect(() => inflateRawInto(stored, new Uint8Array(bytes + 1)), what).toThrow(/ends after \d+ of/);
    }
  });

  it('decodes fflate streams (what diskmirror writes)', () => {
    const next = rng(2);
    const levels = [1, 2, 3, 4, 5, 6, 7, 8, 9] as const;
    for (let t = 0; t < 50; t++) {
      const data = sample(65536, next);
      const out = new Uint8Array(65536);
      inflateRawInto(deflateSync(data, { level: levels[t % levels.length]! }), out);
      expect(Buffer.compare(out, data)).toBe(0);
    }
  });

  it('agrees with zlib on damaged streams: the same bytes, or both fail', () => {
    const next = rng(3);
    let failed = 0;
    for (let t = 0; t < 1500; t++) {
      const bytes = t % 2 ? 4096 : 1024;
      const stream = new Uint8Array(deflateRawSync(sample(bytes, next), { level: 1 + randInt(next, 9), strategy: randInt(next, 5) }));
      for (let flips = 1 + randInt(next, 3); flips > 0; flips--) stream[randInt(next, stream.length)]! ^= 1 << randInt(next, 8);
      const expected = zlibCluster(stream, bytes);
      const got = ours(stream, bytes);
      if (expected === null) {
        expect(got, `case ${t}`).toBeNull();
        failed++;
      } else {
        expect(got, `case ${t}`).not.toBeNull();
        expect(Buffer.compare(got!, expected), `case ${t}`).toBe(0);
      }
    }
    expect(failed).toBeGreaterThan(100); // the damage did reach the decoder's checks
  });

  it('names what is wrong, as zlib does', () => {
    const bad = (bytes: number[]) => () => inflateRawInto(new Uint8Array(bytes), new Uint8Array(16));
    expect(bad([0x07])).toThrow(/invalid block type/);
    expect(bad([0x01, 0x04, 0x00, 0xff, 0xff])).toThrow(/invalid stored block lengths/);
    // Fixed codes: a length/distance pair before any byte is out.
    expect(bad([0x03, 0x02, 0x00, 0x00])).toThrow(/invalid distance too far back/);
    expect(bad([])).toThrow(/ends after 0 of 16/);
    expect(() => decompressCluster('zlib', new Uint8Array([0x07]), new Uint8Array(512), 'at guest offset 0')).toThrow(FormatError);
  });
});
