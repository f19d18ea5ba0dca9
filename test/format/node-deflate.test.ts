/** Node's zlib as the qcow2 deflate codec (the command's): the same clusters, the same refusals, as the portable decoder. */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { installNodeDeflate } from '../../src/cli/node-deflate.js';
import { compressCluster, decompressCluster, inflateRawInto, useNativeDeflate } from '../../src/format/qcow2/compress.js';

const CLUSTER = 65536;

function cluster(seed: number): Uint8Array {
  const out = new Uint8Array(CLUSTER);
  const noise = randomBytes(CLUSTER / 4);
  for (let i = 0; i < CLUSTER; i++) out[i] = (i * seed) % 7 === 0 ? noise[i % noise.length]! : 'qcow2 cluster '.charCodeAt(i % 14);
  return out;
}

/** The portable decoder's answer: the bytes, or the error's message. */
function portable(data: Uint8Array): Uint8Array | string {
  const out = new Uint8Array(CLUSTER);
  try {
    inflateRawInto(data, out);
    return out;
  } catch (err) {
    return (err as Error).message;
  }
}

function native(data: Uint8Array): Uint8Array | string {
  const out = new Uint8Array(CLUSTER);
  try {
    decompressCluster('zlib', data, out, 'here');
    return out;
  } catch (err) {
    return (err as Error).message;
  }
}

describe("Node's zlib for qcow2 clusters", () => {
  afterEach(() => useNativeDeflate(null));

  it('writes clusters the portable decoder reads, and reads what the portable encoder wrote', () => {
    for (let seed = 1; seed < 6; seed++) {
      const data = cluster(seed);
      const portableStream = compressCluster('zlib', data)!;
      installNodeDeflate();
      const nativeStream = compressCluster('zlib', data)!;
      const out = new Uint8Array(CLUSTER);
      decompressCluster('zlib', portableStream, out, 'here');
      expect(out).toEqual(data);
      useNativeDeflate(null);
      expect(portable(nativeStream)).toEqual(data);
    }
  });

  it('agrees with the portable decoder on padded, truncated, damaged and over-long streams', () => {
    const stream = compressCluster('zlib', cluster(3))!;
    const cases: Uint8Array[] = [
      Uint8Array.from([...stream, ...randomBytes(700)]),
      stream.subarray(0, stream.length - 9),
      stream.subarray(0, 3),
      new Uint8Array(0),
    ];
    for (let i = 0; i < 40; i++) {
      const damaged = Uint8Array.from(stream);
      damaged[(i * 37) % damaged.length]! ^= 1 << (i % 8);
      cases.push(damaged);
    }
    // Two clusters' worth: the decoder stops when the cluster is full.
    const twice = new Uint8Array(2 * CLUSTER).fill(9);
    useNativeDeflate(null);
    const portableTwice = compressCluster('zlib', twice)!;
    cases.push(portableTwice);
    for (const c of cases) {
      const want = portable(c);
      installNodeDeflate();
      const got = native(c);
      useNativeDeflate(null);
      if (typeof want === 'string') expect(typeof got).toBe('string');
      else expect(got).toEqual(want);
    }
  });
});
