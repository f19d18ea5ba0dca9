/**
 * Hostile VHD (vpc) and VDI images: seeded mutations of the footers, the
 * dynamic header, the BAT, the VDI header and its block map, on images
 * qemu-img made. Each mutated image either reads (and then reads what
 * qemu-img reads) or is refused with a FormatError that names the field,
 * in bounded time; the command says it in one line. For VDI, `check`
 * agrees with `qemu-img check` on every image both read.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { FormatError } from '../../src/format/image-format.js';
import { openImage } from '../../src/format/open.js';
import { checkExitCode } from '../../src/cli/cmd-check.js';
import { checkVdi } from '../../src/format/vdi/check.js';
import { VdiImage } from '../../src/format/vdi/image.js';
import { vpcChecksum } from '../../src/format/vpc/footer.js';
import { FT_CHECKSUM } from '../../src/format/vpc/constants.js';
import { run as dm } from '../helpers/cli.js';
import { qemuImg, run } from '../helpers/qemu.js';
import { expectFieldRefusal, hostileFiles } from '../helpers/hostile-files.js';
import { mutateRegion } from '../helpers/mutate-region.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, readAll } from './qcow2-images.js';
import { MiB, SUBFORMATS, type Subformat, qemuImage } from './vpc-vdi-images.js';

const TIME_BOUND_MS = 2000;
const MUTATIONS_PER_REGION = Number(process.env.CORRUPT_MUTATIONS ?? 24);

const { name } = hostileFiles('diskmirror-vpc-vdi-hostile-');

interface Region {
  name: string;
  offset: number;
  bytes: number;
  /** A VHD footer: half the mutations make its checksum good again, to reach the fields behind it. */
  footer?: boolean;
}

function regionsOf(sub: Subformat, file: Uint8Array): Region[] {
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  if (sub.format === 'vpc') {
    if (!sub.dynamic) return [{ name: 'footer (at the end)', offset: file.length - 512, bytes: 88, footer: true }];
    const entries = view.getUint32(512 + 28, false);
    return [
      { name: 'footer copy', offset: 0, bytes: 88, footer: true },
      { name: 'dynamic header', offset: 512, bytes: 40 },
      { name: 'BAT', offset: 1536, bytes: entries * 4 },
    ];
  }
  const bmap = view.getUint32(0x154, true);
  const blocks = view.getUint32(0x180, true);
  return [
    { name: 'header', offset: 0x40, bytes: 0x1c8 - 0x40 },
    { name: 'block map', offset: bmap, bytes: blocks * 4 },
  ];
}

/** One seeded change of `region` (words written big-endian, in a VDI too, as this test has always written them). */
function mutate(file: Uint8Array, region: Region, next: () => number): string {
  let what = mutateRegion(file, region, next, { littleEndian: false, values: [0x7fffffff, 0x80000000, 0xfffffffe, 0x00100000, 0x3fffffff] });
  if (region.footer && randInt(next, 2) === 0) {
    const footer = file.subarray(region.offset, region.offset + 512);
    new DataView(footer.buffer, footer.byteOffset).setUint32(FT_CHECKSUM, vpcChecksum(footer, FT_CHECKSUM), false);
    what += ', checksum made good';
  }
  return what;
}

async function ourRead(bytes: Uint8Array, format: Subformat['format']): Promise<{ data?: Uint8Array; error?: unknown; ms: number; checkExit?: number }> {
  const started = Date.now();
  try {
    const image = await openImage(new MemoryDevice(bytes), { format, readOnly: true });
    try {
      const checkExit = image instanceof VdiImage ? checkExitCode(checkVdi(image)) : undefined;
      return { data: await readAll(image), ms: Date.now() - started, ...(checkExit !== undefined ? { checkExit } : {}) };
    } finally {
      await image.close();
    }
  } catch (error) {
    return { error, ms: Date.now() - started };
  }
}

describe('vpc and vdi hostile inputs', () => {
  for (const sub of SUBFORMATS) {
    it(`${sub.label}: seeded mutations end in a FormatError naming the field, or in the bytes qemu-img reads, in bounded time`, async () => {
      const path = name(sub.format);
      await qemuImage(sub, name('raw'), path, 5 * MiB + 512, 9);
      const healthy = new Uint8Array(readFileSync(path));
      let refused = 0;
      let read = 0;
      let checkFindings = 0;
      const lenient: string[] = [];
      const refusals: { what: string; bytes: Uint8Array }[] = [];
      for (const region of regionsOf(sub, healthy)) {
        for (let i = 0; i < MUTATIONS_PER_REGION; i++) {
          const next = rng(1000 * i + region.offset + sub.label.length);
          const bytes = healthy.slice();
          const what = `${sub.label}, ${region.name}, ${mutate(bytes, region, next)}`;
          const ours = await ourRead(bytes, sub.format);
          expect(ours.ms, `${what}: took ${ours.ms} ms`).toBeLessThan(TIME_BOUND_MS);
          const mutated = name(sub.format);
          writeFileSync(mutated, bytes);
          const theirs = await run('qemu-img', ['convert', '-f', sub.format, '-O', 'raw', mutated, `${mutated}.raw`], 30_000);
          if (ours.error !== undefined) {
            expectFieldRefusal(ours.error, what);
            refused++;
            if (refusals.length < 4) refusals.push({ what, bytes });
            continue;
          }
          read++;
          if (theirs.code !== 0) {
            lenient.push(`${what}: qemu-img: ${theirs.stderr.trim()}`);
            continue;
          }
          const reference = readFileSync(`${mutated}.raw`);
          expect(findDiff(ours.data!, reference), `${what}: first byte read otherwise than qemu-img reads it`).toBe(-1);
          if (ours.checkExit !== undefined) {
            const check = await run('qemu-img', ['check', '-f', 'vdi', mutated]);
            if (ours.checkExit !== 0) checkFindings++;
            expect(ours.checkExit, `${what}: check exit ${ours.checkExit}, qemu-img check exit ${check.code} (${check.stderr.trim()})`).toBe(check.code);
          }
        }
      }
      console.log(`${sub.label}: ${refused + read} mutations, ${refused} refused with FormatError, ${read} read (${lenient.length} of them refused by qemu-img)${sub.format === 'vdi' ? `, ${checkFindings} found corrupt by check as by qemu-img check` : ''}`);
      // diskmirror is as strict as qemu-img or stricter: never reads what qemu-img refuses.
      expect(lenient).toEqual([]);
      expect(refused).toBeGreaterThan(0);
      // The command says it in one line, naming the format, with no stack.
      for (const r of refusals.slice(0, 2)) {
        const mutated = name(sub.format);
        writeFileSync(mutated, r.bytes);
        const out = await dm(['info', '-f', sub.format, mutated]);
        expect(out.code, r.what).toBe(1);
        const lines = out.stderr.trim().split('\n');
        expect(lines, `${r.what}: ${out.stderr}`).toHaveLength(1);
        expect(lines[0]).toMatch(new RegExp(sub.format));
        expect(lines[0]).not.toMatch(/\n\s+at /);
      }
    }, 240_000);
  }

  it('a VDI claiming a huge block map, or a VHD a huge BAT, is refused before anything is allocated for it', async () => {
    const vdi = name('vdi');
    await qemuImg('create', '-f', 'vdi', vdi, '4M');
    const v = new Uint8Array(readFileSync(vdi));
    const vv = new DataView(v.buffer);
    vv.setUint32(0x180, 0x3fffffff, true);
    const vdiRead = await ourRead(v, 'vdi');
    expect(vdiRead.error).toBeInstanceOf(FormatError);
    expect((vdiRead.error as FormatError).field).toBe('blocks_in_image');
    const vhd = name('vhd');
    await qemuImg('create', '-f', 'vpc', vhd, '4M');
    const h = new Uint8Array(readFileSync(vhd));
    new DataView(h.buffer).setUint32(512 + 28, 0x000f0000, false);
    const vhdRead = await ourRead(h, 'vpc');
    expect(vhdRead.error).toBeInstanceOf(FormatError);
    expect((vhdRead.error as FormatError).field).toBe('table_offset');
  });
});
