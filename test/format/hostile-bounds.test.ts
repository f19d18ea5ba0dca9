/**
 * Work that stays bounded on hostile images:
 * - a compressed cluster costs one cluster of output, however much the
 *   deflate stream it points at would go on to inflate (images whose L2
 *   entries all point at one stream of 1 GiB of zeroes: qemu-img converts
 *   them in a blink, and so must diskmirror);
 * - a backing chain costs the same per image at any depth, up to
 *   MAX_CHAIN_LENGTH, and a deeper one is refused by name.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { openImageFile } from '../../src/cli/node-images.js';
import { FormatError } from '../../src/format/image-format.js';
import { MAX_CHAIN_LENGTH, openImage } from '../../src/format/open.js';
import { decompressCluster } from '../../src/format/qcow2/compress.js';
import { requireQemu, qemuImg, qemuIo, tempDir } from '../helpers/qemu.js';
import { findDiff, readAll } from './qcow2-images.js';

const MiB = 1 << 20;
/** A hang check, not a benchmark: before the fix the 2 MiB-cluster image took 15 s and more. */
const TIME_BOUND_MS = 3000;

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext = 'qcow2') => dir.file(`h${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  dir = tempDir('diskmirror-hostile-');
});
afterAll(() => dir?.remove());

/**
 * One dynamic deflate block that inflates to `bytes` zeroes (rounded up to
 * 1 + 258k), 2 bits per 258 bytes, deflate's best ratio: a literal 0 (code
 * 10), then pairs of length 258 (code 0) and distance 1 (code 0), then
 * end-of-block (code 11). The pairs are all zero bits. qemu and zlib accept
 * it; a decoder that does not stop once its buffer is full inflates it all.
 */
function zeroBomb(bytes: number): Uint8Array {
  const pairs = Math.ceil((bytes - 1) / 258);
  const out = new Uint8Array(64 + Math.ceil((pairs * 2) / 8));
  let bit = 0;
  const put = (value: number, count: number) => {
    for (let i = 0; i < count; i++, bit++) if ((value >>> i) & 1) out[bit >>> 3]! |= 1 << (bit & 7);
  };
  const code = (value: number, length: number) => {
    for (let i = length - 1; i >= 0; i--, bit++) if ((value >>> i) & 1) out[bit >>> 3]! |= 1 << (bit & 7);
  };
  put(1, 1); // final block
  put(2, 2); // dynamic codes
  put(286 - 257, 5); // literal/length codes up to 285
  put(1 - 1, 5); // one distance code
  put(18 - 4, 4); // code length code lengths for the first 18 symbols of the order
  // In the order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1: symbol 18 (a run of zeroes) gets 1 bit, 1 and 2 get 2.
  for (const length of [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2]) put(length, 3);
  const LEN1 = () => code(0b10, 2); // code length 1
  const LEN2 = () => code(0b11, 2); // code length 2
  const zeroes = (count: number) => (code(0, 1), put(count - 11, 7)); // 11..138 lengths of 0
  LEN2(); // literal 0
  zeroes(138);
  zeroes(117); // literals 1..255
  LEN2(); // end-of-block
  zeroes(28); // lengths 257..284
  LEN1(); // length 285 (258 bytes)
  LEN1(); // distance 0 (1 byte back)
  code(0b10, 2); // literal 0
  bit += pairs * 2; // (285: code 0, distance 0: code 0) pairs
  code(0b11, 2); // end-of-block
  return out.subarray(0, Math.ceil(bit / 8));
}

const GiB_OF_ZEROES = zeroBomb(1 << 30);

/**
 * A qcow2 image qemu-img made, whose first `entries` L2 entries are
 * rewritten to compressed descriptors of `stream`, stored at the first
 * cluster boundary past the end of the file. Descriptor i asks for
 * `sectors(i)` additional sectors (entries that differ keep diskmirror's
 * one-cluster cache from hiding the work).
 */
async function imageWithStream(clusterSize: number, bytes: number, stream: Uint8Array, entries: number, sectors: (i: number) => number): Promise<string> {
  const path = name();
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}`, path, String(bytes));
  await qemuIo(path, [`write -c -P 0x11 0 ${clusterSize}`]); // qemu allocates the L2 table
  const file = readFileSync(path);
  const clusterBits = file.readUInt32BE(20);
  const l1 = Number(file.readBigUInt64BE(40));
  const l2 = Number(file.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  expect(l2).toBeGreaterThan(0);
  const streamOffset = Math.ceil(file.length / clusterSize) * clusterSize;
  const out = Buffer.alloc(streamOffset + stream.length);
  file.copy(out);
  out.set(stream, streamOffset);
  const sectorShift = BigInt(62 - (clusterBits - 8));
  for (let i = 0; i < entries; i++) {
    out.writeBigUInt64BE((1n << 62n) | (BigInt(sectors(i)) << sectorShift) | BigInt(streamOffset), l2 + 8 * i);
  }
  writeFileSync(path, out);
  return path;
}

/** Reads the image through diskmirror and through qemu-img convert; they must agree, and diskmirror must be quick. */
async function readsAsQemu(path: string): Promise<Uint8Array> {
  const scratch = name('raw');
  await qemuImg('convert', '-O', 'raw', path, scratch);
  const reference = readFileSync(scratch);
  const image = await openImageFile(path, { readOnly: true });
  try {
    const t0 = performance.now();
    const ours = await readAll(image);
    const ms = performance.now() - t0;
    expect(findDiff(ours, reference), 'first byte that differs from qemu-img convert').toBe(-1);
    expect(ms, 'diskmirror read the whole image').toBeLessThan(TIME_BOUND_MS);
    return ours;
  } finally {
    await image.close();
  }
}

describe('compressed clusters inflate at most one cluster', () => {
  it('the decoder reads what one cluster needs of a 1 GiB stream, not the stream', () => {
    expect(GiB_OF_ZEROES.length).toBeGreaterThan(1_000_000); // 1 GiB / 1032, deflate's best ratio
    for (const clusterSize of [512, 64 * 1024, 2 * MiB]) {
      const out = new Uint8Array(clusterSize).fill(0xee);
      const read = decompressCluster('zlib', GiB_OF_ZEROES, out, 'in the test');
      expect(out.every((b) => b === 0)).toBe(true);
      // At most 1032 bytes out per byte in: one cluster takes about clusterSize / 1032 bytes.
      expect(read, `cluster size ${clusterSize}`).toBeGreaterThanOrEqual(Math.floor(clusterSize / 1032));
      expect(read, `cluster size ${clusterSize}`).toBeLessThanOrEqual(Math.ceil(clusterSize / 1032) + 64);
    }
  });

  it('8 MiB, 2 MiB clusters: four L2 entries point at 1 GiB of zeroes; diskmirror reads what qemu-img reads, quickly', async () => {
    // The whole stream fits in a descriptor: a 2 MiB cluster may span 8192 sectors.
    const needed = Math.ceil(GiB_OF_ZEROES.length / 512) - 1;
    const path = await imageWithStream(2 * MiB, 8 * MiB, GiB_OF_ZEROES, 4, (i) => needed + i);
    const data = await readsAsQemu(path);
    expect(data.every((b) => b === 0)).toBe(true);
  });

  it('8 MiB, 64 KiB clusters: 128 entries each read 128 KiB of the stream (over 100 MiB of zeroes, cut short)', async () => {
    // At most 255 more sectors: the descriptor cuts the stream, and inflating it all would fail at its end.
    const path = await imageWithStream(64 * 1024, 8 * MiB, GiB_OF_ZEROES, 128, (i) => 255 - (i % 2));
    const data = await readsAsQemu(path);
    expect(data.every((b) => b === 0)).toBe(true);
  });

  it('a stream that ends before the cluster is full is an error, as in qemu-img', async () => {
    const short = deflateRawSync(new Uint8Array(1000));
    const path = await imageWithStream(64 * 1024, 1 * MiB, short, 1, () => 1);
    const qemu = await qemuIo(path, ['read 0 64k']).then(
      () => 'read',
      (err: Error) => err.message,
    );
    expect(qemu).toMatch(/Input\/output error|failed/);
    const image = await openImageFile(path, { readOnly: true });
    try {
      await expect(image.read(0, new Uint8Array(4096))).rejects.toThrow(/ends after 1000 of 65536 bytes/);
    } finally {
      await image.close();
    }
  });
});

describe('backing chain depth', () => {
  /**
   * A chain in memory, `depth` images deep (the top included): copies of an
   * overlay qemu-img made, each naming the next (c00001, c00002, ...), over
   * a base with data at 64 KiB. `loopAt` makes the last one name that image instead.
   */
  async function memoryChain(depth: number, loopAt?: number) {
    const base = name();
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', base, '1M');
    await qemuIo(base, ['write -P 0x5a 64k 4k']);
    const template = name();
    await qemuImg('create', '-q', '-u', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'c99999', '-F', 'qcow2', template, '1M');
    const overlay = readFileSync(template);
    const at = overlay.indexOf('c99999');
    expect(at).toBeGreaterThan(0);
    const label = (i: number) => `c${String(i).padStart(5, '0')}`;
    const files = new Map<string, Uint8Array>();
    for (let i = 0; i < depth - 1; i++) {
      const copy = Buffer.from(overlay);
      const next = i === depth - 2 && loopAt !== undefined ? label(loopAt) : label(i + 1);
      copy.write(next, at, 'latin1');
      files.set(label(i), copy);
    }
    files.set(label(depth - 1), readFileSync(base));
    const open = () =>
      openImage(new MemoryDevice(files.get(label(0))!, true), {
        name: label(0),
        resolve: async (backing) => {
          const bytes = files.get(backing);
          if (!bytes) throw new Error(`no image ${backing}`);
          return { device: new MemoryDevice(bytes, true), name: backing };
        },
      });
    return { open };
  }

  it(`opens and reads a chain of ${MAX_CHAIN_LENGTH} images in bounded time`, async () => {
    const chain = await memoryChain(MAX_CHAIN_LENGTH);
    const t0 = performance.now();
    const image = await chain.open();
    try {
      const data = new Uint8Array(128 * 1024);
      await image.read(0, data);
      expect(data.subarray(0, 64 * 1024).every((b) => b === 0)).toBe(true);
      expect(data.subarray(64 * 1024, 68 * 1024).every((b) => b === 0x5a)).toBe(true);
      const status = await image.blockStatus(64 * 1024, 4096);
      expect(status).toMatchObject({ kind: 'data', depth: MAX_CHAIN_LENGTH - 1 });
      const info = await image.info();
      let length = 0;
      for (let i: typeof info | undefined = info; i; i = i.backing) length++;
      expect(length).toBe(MAX_CHAIN_LENGTH);
    } finally {
      await image.close();
    }
    expect(performance.now() - t0).toBeLessThan(20_000);
  }, 60_000);

  it(`refuses a chain of ${MAX_CHAIN_LENGTH + 1} images, naming the limit`, async () => {
    const chain = await memoryChain(MAX_CHAIN_LENGTH + 1);
    const err = await chain.open().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toBe(`Backing chain of 'c00000' is longer than ${MAX_CHAIN_LENGTH} images`);
  }, 60_000);

  it('a loop at the end of a long chain is named in a few words', async () => {
    const chain = await memoryChain(1000, 10);
    await expect(chain.open()).rejects.toThrow(/^Backing file loop: 'c00998' names 'c00010', which is already in the chain \(c00010 -> c00011 -> c00012 -> \.\.\. 984 more \.\.\. -> c00997 -> c00998 -> c00010\)$/);
  }, 60_000);
});
