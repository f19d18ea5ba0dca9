/**
 * Hostile input: seeded mutations of the header, L1 and L2 tables, refcount
 * table and blocks, and snapshot table of real images. Each mutated image
 * either reads (and then reads what qemu-img reads) or fails with a clean
 * FormatError, within a time bound; `check` agrees with `qemu-img check`
 * on the exit code.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECK_EXIT, checkExitCode } from '../../src/cli/cmd-check.js';
import { openImageFile } from '../../src/cli/node-images.js';
import { FormatError } from '../../src/format/image-format.js';
import { checkImage } from '../../src/format/qcow2/check.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { requireQemu, qemuImg, qemuIo, run, tempDir } from '../helpers/qemu.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff } from './qcow2-images.js';

const TIME_BOUND_MS = 2000;
const MUTATIONS_PER_REGION = Number(process.env.CORRUPT_MUTATIONS ?? 16);
let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext = 'qcow2') => dir.file(`c${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  dir = tempDir('diskmirror-corrupt-');
});
afterAll(() => dir?.remove());

interface Region {
  name: string;
  offset: number;
  bytes: number;
  /** Entries are 8-byte words (tables) rather than loose bytes. */
  words: boolean;
}

/** Where the structures of a (healthy) image are. */
async function regions(path: string): Promise<Region[]> {
  const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
  try {
    const h = image.header;
    const cs = h.clusterSize;
    const out: Region[] = [
      { name: 'header', offset: 0, bytes: h.headerLength, words: false },
      { name: 'header extensions', offset: h.headerLength, bytes: Math.max(8, h.extensionsEnd + 8 - h.headerLength), words: false },
      { name: 'L1 table', offset: h.l1TableOffset, bytes: h.l1Size * 8, words: true },
      { name: 'refcount table', offset: h.refcountTableOffset, bytes: 64, words: true },
    ];
    const l2 = image.map.l2Offset(0);
    if (l2) out.push({ name: 'L2 table', offset: l2, bytes: Math.min(cs, 2048), words: true });
    const refcounts = await image.refcounts();
    const block = refcounts.blockOffset(0);
    if (block) out.push({ name: 'refcount block', offset: block, bytes: Math.min(cs, 1024), words: false });
    if (h.nbSnapshots > 0) out.push({ name: 'snapshot table', offset: h.snapshotsOffset, bytes: 64, words: false });
    return out;
  } finally {
    await image.close();
  }
}

/** One seeded mutation of a region. */
function mutate(data: Uint8Array, region: Region, next: () => number, fileBytes: number, clusterSize: number): string {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (region.words && randInt(next, 3) > 0) {
    const word = region.offset + 8 * randInt(next, Math.max(1, region.bytes / 8));
    const choices: Array<[string, number, number]> = [
      ['zero', 0, 0],
      ['all ones', 0xffffffff, 0xffffffff],
      ['offset past the end', 0x80000000 | Math.floor((fileBytes * 4) / 2 ** 32), (fileBytes * 4) >>> 0],
      ['unaligned offset', 0x80000000, (clusterSize + 512) >>> 0],
      ['the header', 0x80000000, 0],
      ['the table itself', 0x80000000, region.offset >>> 0],
      ['a data cluster', 0x80000000, (clusterSize * (4 + randInt(next, 8))) >>> 0],
      ['reserved bits', view.getUint32(word, false) | 0x01000000, view.getUint32(word + 4, false) | 0x100],
      ['a flipped bit', view.getUint32(word, false) ^ (1 << randInt(next, 32)), view.getUint32(word + 4, false)],
      ['a flipped low bit', view.getUint32(word, false), view.getUint32(word + 4, false) ^ (1 << randInt(next, 32))],
    ];
    const [label, hi, lo] = choices[randInt(next, choices.length)]!;
    view.setUint32(word, hi >>> 0, false);
    view.setUint32(word + 4, lo >>> 0, false);
    return `${region.name} word at ${word}: ${label}`;
  }
  const at = region.offset + randInt(next, region.bytes);
  if (randInt(next, 2) === 0) {
    const bit = randInt(next, 8);
    data[at] = data[at]! ^ (1 << bit);
    return `${region.name} byte ${at}: bit ${bit} flipped`;
  }
  const value = randInt(next, 256);
  data[at] = value;
  return `${region.name} byte ${at}: set to ${value}`;
}

type Outcome = { ok: true; data: Uint8Array } | { ok: false; error: unknown };

async function readWithUs(path: string): Promise<Outcome> {
  try {
    const image = await openImageFile(path, { readOnly: true });
    try {
      const data = new Uint8Array(image.size);
      for (let off = 0; off < image.size; off += 1 << 20) await image.read(off, data.subarray(off, Math.min(image.size, off + (1 << 20))));
      for (let off = 0; off < image.size; ) {
        const s = await image.blockStatus(off, image.size - off);
        off += s.bytes;
      }
      return { ok: true, data };
    } finally {
      await image.close();
    }
  } catch (error) {
    return { ok: false, error };
  }
}

async function checkWithUs(path: string): Promise<number> {
  let image: Qcow2Image | undefined;
  try {
    const opened = await openImageFile(path, { readOnly: true });
    if (!(opened instanceof Qcow2Image)) {
      await opened.close();
      return CHECK_EXIT.unsupported; // the magic is gone: probed as raw
    }
    image = opened;
    return checkExitCode(await checkImage(image));
  } catch (error) {
    if (!(error instanceof FormatError)) throw error;
    return 1;
  } finally {
    await image?.close();
  }
}

async function baseImages(): Promise<Array<{ label: string; path: string }>> {
  const out: Array<{ label: string; path: string }> = [];
  const a = name();
  await qemuImg('create', '-f', 'qcow2', a, '4M');
  await qemuIo(a, ['write -P 0x11 0 1M', 'write -z 1M 64k', 'write -c -P 0x12 2M 128k', 'write -P 0x13 3M 64k']);
  await qemuImg('snapshot', '-c', 'snap', a);
  await qemuIo(a, ['write -P 0x14 0 64k']);
  out.push({ label: '64 KiB clusters, compressed, a snapshot', path: a });
  const b = name();
  await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=1', b, '2M');
  await qemuIo(b, ['write -P 0x21 0 300k', 'write -z 600k 8k', 'write -P 0x22 1M 100k']);
  out.push({ label: '4 KiB clusters, 1-bit refcounts', path: b });
  const c = name();
  await qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=32k', c, '2M');
  await qemuIo(c, ['write -P 0x31 0 5k', 'write -z 40k 3k', 'write -P 0x32 1M 64k']);
  out.push({ label: 'extended L2', path: c });
  const d = name();
  await qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=512', d, '1M');
  await qemuIo(d, ['write -P 0x41 0 20k', 'write -P 0x42 512k 4k']);
  out.push({ label: 'compat 0.10, 512-byte clusters', path: d });
  return out;
}

describe('qcow2 corruption suite', () => {
  it('seeded mutations end in a clean FormatError or a correct read, in bounded time; check agrees with qemu-img check', async () => {
    const disagreements: string[] = [];
    let mutations = 0;
    let refused = 0;
    let read = 0;
    for (const base of await baseImages()) {
      const original = readFileSync(base.path);
      const clusterSize = (await qemuImg('info', '--output=json', base.path)).match(/"cluster-size": (\d+)/)![1]!;
      const next = rng(base.path.length * 7919 + Number(process.env.CORRUPT_SEED ?? 0));
      for (const region of await regions(base.path)) {
        for (let i = 0; i < MUTATIONS_PER_REGION; i++) {
          const data = new Uint8Array(original);
          const what = mutate(data, region, next, original.length, Number(clusterSize));
          const path = name();
          writeFileSync(path, data);
          mutations++;
          const started = performance.now();
          const ours = await readWithUs(path);
          const oursCheck = await checkWithUs(path);
          const elapsed = performance.now() - started;
          expect(elapsed, `${base.label}, ${what}: took ${elapsed.toFixed(0)} ms`).toBeLessThan(TIME_BOUND_MS);
          if (!ours.ok) {
            expect(ours.error, `${base.label}, ${what}: ${String(ours.error)}`).toBeInstanceOf(FormatError);
            refused++;
          } else {
            read++;
            const raw = `${path}.raw`;
            const converted = await run('qemu-img', ['convert', '-O', 'raw', path, raw]);
            if (converted.code === 0) {
              const diff = findDiff(ours.data, readFileSync(raw));
              if (diff >= 0) disagreements.push(`${base.label}, ${what}: reads differ from qemu-img at ${diff}`);
            }
          }
          const theirs = await run('qemu-img', ['check', path]);
          if (theirs.code !== oursCheck) {
            disagreements.push(`${base.label}, ${what}: check exit ${oursCheck}, qemu-img check exit ${theirs.code} (${theirs.stderr.trim().split('\n')[0]})`);
          }
        }
      }
    }
    console.log(`${mutations} mutations: ${refused} refused with FormatError, ${read} read; ${disagreements.length} disagreements`);
    expect(disagreements).toEqual([]);
  }, 300_000);
});
