/**
 * Hostile VHDX images: seeded mutations of the headers, the region table,
 * the metadata table and items, and the BAT of images qemu-img made. Each
 * mutated image either reads (and then reads what qemu-img reads, and
 * `check` agrees with `qemu-img check`) or is refused with a FormatError
 * that names the field, in bounded time; the command says it in one line.
 * Half the mutations of a checksummed structure make its CRC-32C good
 * again, to reach the fields behind it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { checkExitCode } from '../../src/cli/cmd-check.js';
import { FormatError } from '../../src/format/image-format.js';
import { openImage } from '../../src/format/open.js';
import { checkVhdx } from '../../src/format/vhdx/check.js';
import { putChecksum } from '../../src/format/vhdx/header.js';
import { VhdxImage } from '../../src/format/vhdx/image.js';
import { run as dm } from '../helpers/cli.js';
import { qemuImg, run } from '../helpers/qemu.js';
import { expectFieldRefusal, hostileFiles } from '../helpers/hostile-files.js';
import { mutateRegion } from '../helpers/mutate-region.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, readAll } from './qcow2-images.js';
import { MiB, type Subformat, qemuImage } from './vpc-vdi-images.js';

const TIME_BOUND_MS = 2000;
const MUTATIONS_PER_REGION = Number(process.env.CORRUPT_MUTATIONS ?? 16);
const KiB = 1024;

const { name } = hostileFiles('diskmirror-vhdx-hostile-');

interface Region {
  name: string;
  offset: number;
  bytes: number;
  /** The structure's checksum: where it starts, how long it is, where its CRC-32C field is. */
  crc?: { start: number; bytes: number };
}

/** The regions of a qemu-img image (its layout: BAT at 2 MiB, metadata after it). */
function regionsOf(file: Uint8Array): Region[] {
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  const rt = 192 * KiB;
  const entry = (i: number) => ({ offset: Number(view.getBigUint64(rt + 16 + i * 32 + 16, true)), bytes: view.getUint32(rt + 16 + i * 32 + 24, true) });
  const [bat, metadata] = [entry(0), entry(1)];
  const batEntries = 16;
  return [
    { name: 'header 1', offset: 64 * KiB, bytes: 80, crc: { start: 64 * KiB, bytes: 4 * KiB } },
    { name: 'header 2', offset: 128 * KiB, bytes: 80, crc: { start: 128 * KiB, bytes: 4 * KiB } },
    { name: 'region table', offset: rt, bytes: 16 + 2 * 32, crc: { start: rt, bytes: 64 * KiB } },
    { name: 'metadata table', offset: metadata.offset, bytes: 32 + 5 * 32 },
    { name: 'metadata items', offset: metadata.offset + 64 * KiB, bytes: 40 },
    { name: 'BAT', offset: bat.offset, bytes: batEntries * 8 },
  ];
}

/** One seeded change of `region` (little-endian words; a BAT word may become a state: 6 present, 7 partially present). */
function mutate(file: Uint8Array, region: Region, next: () => number): string {
  let what = mutateRegion(file, region, next, { littleEndian: true, values: [0x7fffffff, 0x80000000, 0xfffffffe, 0x00100000, 0x3fffffff, 0x00000006, 0x00700006] });
  if (region.crc && randInt(next, 2) === 0) {
    putChecksum(file.subarray(region.crc.start, region.crc.start + region.crc.bytes), 4);
    what += ', checksum made good';
  }
  return what;
}

/** Images whose mutated virtual size is larger are opened, not read whole (a size field grown to gigabytes of zeroes is no hang). */
const MAX_READ_BYTES = 64 * MiB;

async function ourRead(bytes: Uint8Array): Promise<{ data?: Uint8Array; size?: number; error?: unknown; ms: number; checkExit?: number }> {
  const started = Date.now();
  try {
    const image = await openImage(new MemoryDevice(bytes), { format: 'vhdx', readOnly: true });
    try {
      const checkExit = image instanceof VhdxImage ? checkExitCode(checkVhdx(image)) : undefined;
      const data = image.size <= MAX_READ_BYTES ? await readAll(image) : undefined;
      return { ...(data ? { data } : {}), size: image.size, ms: Date.now() - started, ...(checkExit !== undefined ? { checkExit } : {}) };
    } finally {
      await image.close();
    }
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
}

const CASES: Subformat[] = [
  { label: 'vhdx dynamic', format: 'vhdx', options: 'subformat=dynamic,block_size=1M', dynamic: true },
  { label: 'vhdx fixed', format: 'vhdx', options: 'subformat=fixed,block_size=1M', dynamic: false },
];

describe('vhdx hostile inputs', () => {
  for (const sub of CASES) {
    it(`${sub.label}: seeded mutations end in a FormatError naming the field, or in the bytes qemu-img reads, in bounded time`, async () => {
      const path = name('vhdx');
      await qemuImage(sub, name('raw'), path, 5 * MiB + 512, 9);
      const healthy = new Uint8Array(readFileSync(path));
      let refused = 0;
      let read = 0;
      const lenient: string[] = [];
      const refusals: { what: string; bytes: Uint8Array }[] = [];
      for (const region of regionsOf(healthy)) {
        for (let i = 0; i < MUTATIONS_PER_REGION; i++) {
          const next = rng(1000 * i + region.offset + sub.label.length);
          const bytes = healthy.slice();
          const what = `${sub.label}, ${region.name}, ${mutate(bytes, region, next)}`;
          const ours = await ourRead(bytes);
          expect(ours.ms, `${what}: took ${ours.ms} ms`).toBeLessThan(TIME_BOUND_MS);
          const mutated = name('vhdx');
          writeFileSync(mutated, bytes);
          if (ours.error !== undefined) {
            expectFieldRefusal(ours.error, what);
            refused++;
            if (refusals.length < 4) refusals.push({ what, bytes });
            continue;
          }
          read++;
          if (!ours.data) {
            const info = await run('qemu-img', ['info', '-f', 'vhdx', '--output=json', mutated]);
            if (info.code !== 0) lenient.push(`${what}: qemu-img: ${info.stderr.trim()}`);
            else expect((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], what).toBe(ours.size);
            continue;
          }
          const theirs = await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', mutated, `${mutated}.raw`], 30_000);
          if (theirs.code !== 0) {
            lenient.push(`${what}: qemu-img: ${theirs.stderr.trim()}`);
            continue;
          }
          const reference = readFileSync(`${mutated}.raw`);
          expect(findDiff(ours.data!, reference), `${what}: first byte read otherwise than qemu-img reads it`).toBe(-1);
          const check = await run('qemu-img', ['check', '-f', 'vhdx', mutated]);
          expect(ours.checkExit, `${what}: check exit ${ours.checkExit}, qemu-img check exit ${check.code} (${check.stderr.trim()})`).toBe(check.code);
        }
      }
      console.log(`${sub.label}: ${refused + read} mutations, ${refused} refused with FormatError, ${read} read (${lenient.length} of them refused by qemu-img)`);
      // diskmirror is as strict as qemu-img or stricter: never reads what qemu-img refuses.
      expect(lenient).toEqual([]);
      expect(refused).toBeGreaterThan(0);
      expect(read).toBeGreaterThan(0);
      // The command says it in one line, naming the format, with no stack.
      for (const r of refusals.slice(0, 3)) {
        const mutated = name('vhdx');
        writeFileSync(mutated, r.bytes);
        const out = await dm(['info', '-f', 'vhdx', mutated]);
        expect(out.code, r.what).toBe(1);
        const lines = out.stderr.trim().split('\n');
        expect(lines, `${r.what}: ${out.stderr}`).toHaveLength(1);
        expect(lines[0]).toMatch(/vhdx/i);
      }
    }, 480_000);
  }

  it('a BAT region claimed larger than the file, or a virtual size past 64 TiB, is refused before anything is allocated for it', async () => {
    const path = name('vhdx');
    await qemuImg('create', '-f', 'vhdx', path, '4M');
    const healthy = new Uint8Array(readFileSync(path));
    const rt = 192 * KiB;
    const big = healthy.slice();
    new DataView(big.buffer).setUint32(rt + 16 + 24, 0xfff00000, true);
    putChecksum(big.subarray(rt, rt + 64 * KiB), 4);
    const r1 = await ourRead(big);
    expect((r1.error as FormatError).field).toBe('region_table');
    const huge = healthy.slice();
    const metadata = Number(new DataView(huge.buffer).getBigUint64(rt + 16 + 32 + 16, true));
    new DataView(huge.buffer).setBigUint64(metadata + 64 * KiB + 8, 1n << 50n, true);
    const r2 = await ourRead(huge);
    expect((r2.error as FormatError).field).toBe('virtual_disk_size');
  });
});
