/**
 * Hostile VMDK images: seeded mutations of the sparse header, the embedded
 * descriptor, the grain directory and a grain table (monolithicSparse and
 * streamOptimized made by qemu-img, and a stream with its header in a
 * footer). Each mutated image either reads (and then reads what qemu-img
 * reads, and `check` exits as `qemu-img check` does) or is refused with a
 * FormatError that names the field, in bounded time; the command says it
 * in one line.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { FormatError } from '../../src/format/image-format.js';
import { openImage } from '../../src/format/open.js';
import { checkVmdk } from '../../src/format/vmdk/check.js';
import { VmdkImage } from '../../src/format/vmdk/image.js';
import { run as dm } from '../helpers/cli.js';
import { qemuImg, run } from '../helpers/qemu.js';
import { expectFieldRefusal, hostileFiles } from '../helpers/hostile-files.js';
import { mutateRegion } from '../helpers/mutate-region.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, readAll } from './qcow2-images.js';
import { MiB } from './vpc-vdi-images.js';
import { VMDK_SUBFORMATS, moveHeaderToFooter, qemuVmdk } from './vmdk-images.js';

const TIME_BOUND_MS = 2000;
const MUTATIONS_PER_REGION = Number(process.env.CORRUPT_MUTATIONS ?? 24);
/** Images larger than this after a mutation are read at both ends only (qemu-img is not asked). */
const READ_WHOLE_BYTES = 64 * MiB;

const { name } = hostileFiles('diskmirror-vmdk-hostile-');

interface Region {
  name: string;
  offset: number;
  bytes: number;
  /** Text: mutations change characters. */
  text?: boolean;
}

function regionsOf(file: Uint8Array, footer: boolean): Region[] {
  const headerAt = footer ? file.length - 1024 : 0;
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  const gd = view.getUint32(headerAt + 56, true) * 512;
  const gt = view.getUint32(gd, true) * 512;
  return [
    { name: footer ? 'footer header' : 'header', offset: headerAt, bytes: 80 },
    { name: 'descriptor', offset: 512, bytes: 300, text: true },
    { name: 'grain directory', offset: gd, bytes: 16 },
    { name: 'grain table', offset: gt, bytes: 2048 },
  ];
}

/** One seeded change of `region`: a byte, a word set to an edge value, or a word nudged; in text, a character. */
function mutate(file: Uint8Array, region: Region, next: () => number): string {
  if (region.text) {
    const at = region.offset + randInt(next, region.bytes);
    file[at] = ' 0=f"\n#x\0'.charCodeAt(randInt(next, 9));
    return `character ${at} = ${JSON.stringify(String.fromCharCode(file[at]!))}`;
  }
  return mutateRegion(file, region, next, { littleEndian: true, values: [0x7fffffff, 0x80000000, 0xfffffffe, 0x00100000, 1, 0x200001] });
}

async function ourRead(bytes: Uint8Array): Promise<{ data?: Uint8Array; whole?: boolean; error?: unknown; ms: number; checkExit?: number }> {
  const started = Date.now();
  try {
    const image = await openImage(new MemoryDevice(bytes), { format: 'vmdk', readOnly: true });
    try {
      const checkExit = image instanceof VmdkImage ? ((await checkVmdk(image)).failure ? 1 : 0) : undefined;
      if (image.size > READ_WHOLE_BYTES) {
        const ends = new Uint8Array(MiB);
        await image.read(0, ends);
        await image.read(image.size - MiB, ends);
        return { whole: false, ms: Date.now() - started };
      }
      return { data: await readAll(image), whole: true, ms: Date.now() - started, ...(checkExit !== undefined ? { checkExit } : {}) };
    } finally {
      await image.close();
    }
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
}

const CASES = [
  { label: 'monolithicSparse', footer: false },
  { label: 'streamOptimized', footer: false },
  { label: 'streamOptimized', footer: true },
] as const;

describe('vmdk hostile inputs', () => {
  for (const c of CASES) {
    it(`${c.label}${c.footer ? ' (header in a footer)' : ''}: seeded mutations end in a FormatError naming the field, or in the bytes qemu-img reads, in bounded time`, async () => {
      const path = name('vmdk');
      await qemuVmdk(VMDK_SUBFORMATS.find((s) => s.label === c.label)!, name('raw'), path, 5 * MiB + 512, 9);
      if (c.footer) moveHeaderToFooter(path);
      const healthy = new Uint8Array(readFileSync(path));
      let refused = 0;
      let read = 0;
      let checkFindings = 0;
      const lenient: string[] = [];
      const refusals: { what: string; bytes: Uint8Array }[] = [];
      for (const region of regionsOf(healthy, c.footer)) {
        for (let i = 0; i < MUTATIONS_PER_REGION; i++) {
          const next = rng(1000 * i + region.offset + c.label.length);
          const bytes = healthy.slice();
          const what = `${c.label}, ${region.name}, ${mutate(bytes, region, next)}`;
          const ours = await ourRead(bytes);
          expect(ours.ms, `${what}: took ${ours.ms} ms`).toBeLessThan(TIME_BOUND_MS);
          if (ours.error !== undefined) {
            expectFieldRefusal(ours.error, what);
            refused++;
            if (refusals.length < 4) refusals.push({ what, bytes });
            continue;
          }
          read++;
          if (!ours.whole) continue;
          const mutated = name('vmdk');
          writeFileSync(mutated, bytes);
          const theirs = await run('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', mutated, `${mutated}.raw`], 30_000);
          if (theirs.code !== 0) {
            lenient.push(`${what}: qemu-img: ${theirs.stderr.trim()}`);
            continue;
          }
          expect(findDiff(ours.data!, readFileSync(`${mutated}.raw`)), `${what}: first byte read otherwise than qemu-img reads it`).toBe(-1);
          const check = await run('qemu-img', ['check', '-f', 'vmdk', mutated]);
          if (ours.checkExit !== 0) checkFindings++;
          expect(ours.checkExit, `${what}: check exit ${ours.checkExit}, qemu-img check exit ${check.code} (${check.stderr.trim()})`).toBe(check.code);
        }
      }
      console.log(`vmdk ${c.label}${c.footer ? ' footer' : ''}: ${refused + read} mutations, ${refused} refused with FormatError, ${read} read (${lenient.length} of them refused by qemu-img), ${checkFindings} failed check as qemu-img check`);
      // diskmirror is as strict as qemu-img or stricter: never reads what qemu-img refuses.
      expect(lenient).toEqual([]);
      expect(refused).toBeGreaterThan(0);
      // The command says it in one line, naming the format, with no stack.
      for (const r of refusals.slice(0, 2)) {
        const mutated = name('vmdk');
        writeFileSync(mutated, r.bytes);
        // Some refusals come from reading a grain, not from opening: a copy does both.
        const out = await dm(['convert', '-f', 'vmdk', '-O', 'raw', mutated, `${mutated}.copy`]);
        expect(out.code, r.what).toBe(1);
        const lines = out.stderr.trim().split('\n');
        expect(lines, `${r.what}: ${out.stderr}`).toHaveLength(1);
        expect(lines[0]).toMatch(/vmdk|VMDK/);
      }
    }, 300_000);
  }

  it('a header claiming a huge grain directory, huge grains or huge grain tables is refused before anything is allocated for it', async () => {
    const path = name('vmdk');
    await qemuImg('create', '-f', 'vmdk', path, '4M');
    const healthy = new Uint8Array(readFileSync(path));
    for (const [at, value, field] of [
      [12, 0xffffffff, 'capacity'],
      [20, 0x200001, 'granularity'],
      [44, 513, 'num_gtes_per_gt'],
      [44, 0, 'num_gtes_per_gt'],
    ] as const) {
      const bytes = healthy.slice();
      new DataView(bytes.buffer).setUint32(at, value, true);
      if (field === 'capacity') new DataView(bytes.buffer).setUint32(at + 4, 0x100, true);
      const r = await ourRead(bytes);
      expect(r.error, field).toBeInstanceOf(FormatError);
      expect((r.error as FormatError).field).toBe(field);
    }
  });
});
