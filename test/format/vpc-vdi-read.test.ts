/**
 * Reading VHD (vpc) and VDI images made by qemu-img and qemu-io, each
 * subformat with data, holes and zero ranges: every byte as `qemu-img
 * convert -O raw` reads it, the map as `qemu-img map`, `info` as `qemu-img
 * info`, the virtual size by qemu-img's rules (CHS geometry or the
 * footer's current size, by creator), and probing as qemu-img probes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import { mapImage, type MapExtent } from '../../src/format/map.js';
import { FT_CHECKSUM, FT_CREATOR_APP, FT_CYLINDERS, FT_HEADS, FT_SECTORS_PER_TRACK } from '../../src/format/vpc/constants.js';
import { vpcChecksum } from '../../src/format/vpc/footer.js';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand } from '../helpers/require-program.js';
import { normalizeRanges, qemuImg, qemuMap, requireQemu, tempDir } from '../helpers/qemu.js';
import { MiB, SUBFORMATS, expectReadsAsQemu, qemuImage } from './vpc-vdi-images.js';

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`r${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-vpc-vdi-read-');
});
afterAll(() => dir.remove());

/** A size no geometry holds exactly, across several blocks of either format. */
const BYTES = 13 * MiB + 5 * 512;

describe('vpc and vdi read: every byte as qemu-img reads it', () => {
  for (const sub of SUBFORMATS) {
    it(`${sub.label}: data, holes and zero ranges read as qemu-img convert -O raw reads them`, async () => {
      const path = name(sub.format);
      await qemuImage(sub, name('raw'), path, BYTES, 101);
      const ours = await expectReadsAsQemu(path, sub.format, name('raw'));
      // The image has all three: data, zeroes written, and never written.
      expect(ours.some((b) => b !== 0)).toBe(true);
    });
  }
});

describe('vpc and vdi read: the map as qemu-img map', () => {
  for (const sub of SUBFORMATS.filter((s) => s.label !== 'vpc fixed')) {
    it(`${sub.label}: data and zero extents (and their offsets in the file) agree with qemu-img map`, async () => {
      const path = name(sub.format);
      await qemuImage(sub, name('raw'), path, BYTES, 202);
      const image = await openImageFile(path, { readOnly: true, format: sub.format });
      try {
        const ours: MapExtent[] = [];
        await mapImage(image, (e) => ours.push(e));
        const theirs = await qemuMap(path);
        expect(normalizeRanges(ours)).toEqual(normalizeRanges(theirs));
        // qemu-img looks into the file too, splitting a static image's data where the file has holes: offsets only for dynamic ones.
        if (sub.dynamic) {
          expect(ours.filter((e) => e.data).map((e) => [e.start, e.length, e.offset])).toEqual(theirs.filter((e) => e.data).map((e) => [e.start, e.length, e.offset]));
          expect(ours.some((e) => !e.data)).toBe(true);
        }
      } finally {
        await image.close();
      }
    });
  }
});

describe('vpc and vdi read: info as qemu-img info', () => {
  for (const sub of SUBFORMATS) {
    it(`${sub.label}: info --output=json agrees on format, virtual size and cluster size; the human lines too`, async () => {
      const path = name(sub.format);
      await qemuImage(sub, name('raw'), path, BYTES, 303);
      const ours = await dm(['info', '-f', sub.format, '--output=json', path]);
      expect(ours.code, ours.stderr).toBe(0);
      const theirs = JSON.parse(await qemuImg('info', '-f', sub.format, '--output=json', path)) as Record<string, unknown>;
      const o = JSON.parse(ours.stdout) as Record<string, unknown>;
      expect(o.format).toBe(sub.format);
      expect([o['virtual-size'], o['cluster-size']]).toEqual([theirs['virtual-size'], theirs['cluster-size']]);
      const human = await dm(['info', '-f', sub.format, path]);
      const qemuHuman = await qemuImg('info', '-f', sub.format, path);
      const pick = (text: string) => text.split('\n').filter((l) => /^(file format|virtual size|cluster_size):/.test(l));
      expect(pick(human.stdout)).toEqual(pick(qemuHuman));
    });
  }

  it('probing: a dynamic VHD and a VDI are recognised by content; a fixed VHD, whose footer is only at the end, probes as raw as in qemu-img', async () => {
    for (const sub of SUBFORMATS) {
      const path = name('img');
      await qemuImg('create', '-f', sub.format, '-o', sub.options, path, '3M');
      const ours = JSON.parse((await dm(['info', '--output=json', path])).stdout) as { format: string };
      const theirs = JSON.parse(await qemuImg('info', '--output=json', path)) as { format: string };
      expect(ours.format, sub.label).toBe(theirs.format);
      expect(ours.format).toBe(sub.label === 'vpc fixed' ? 'raw' : sub.format);
    }
  });
});

/** Rewrites both footers of a dynamic VHD (the copy at 0 and the one at the end) with `change`, checksums made good. */
function patchFooters(path: string, change: (footer: Uint8Array) => void): void {
  const bytes = new Uint8Array(readFileSync(path));
  for (const at of [0, bytes.length - 512]) {
    const footer = bytes.subarray(at, at + 512);
    change(footer);
    new DataView(footer.buffer, footer.byteOffset).setUint32(FT_CHECKSUM, vpcChecksum(footer, FT_CHECKSUM), false);
  }
  writeFileSync(path, bytes);
}

describe('vpc read: the virtual size by qemu-img 7.2 rules', () => {
  const creators = ['vpc ', 'qemu', 'qem2', 'win ', 'd2v ', 'CTXS', 'tap\0', 'wa\0\0', 'xyz '];
  for (const creator of creators) {
    it(`creator ${JSON.stringify(creator)}: the size (geometry or current size) is qemu-img's`, async () => {
      const path = name('vhd');
      // 10 MiB rounds up to a geometry of 10514432 bytes: the two sizes differ.
      await qemuImg('create', '-f', 'vpc', path, '10M');
      patchFooters(path, (f) => f.set(Array.from(creator, (c) => c.charCodeAt(0)), FT_CREATOR_APP));
      const theirs = JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', path)) as { 'virtual-size': number };
      const image = await openImageFile(path, { readOnly: true, format: 'vpc' });
      try {
        expect(image.size).toBe(theirs['virtual-size']);
      } finally {
        await image.close();
      }
    });
  }

  it('the largest geometry (65535/16/255) means the current size, whatever the creator', async () => {
    const path = name('vhd');
    await qemuImg('create', '-f', 'vpc', path, '10M');
    patchFooters(path, (f) => {
      new DataView(f.buffer, f.byteOffset).setUint16(FT_CYLINDERS, 65535, false);
      f[FT_HEADS] = 16;
      f[FT_SECTORS_PER_TRACK] = 255;
    });
    const theirs = JSON.parse(await qemuImg('info', '-f', 'vpc', '--output=json', path)) as { 'virtual-size': number };
    const image = await openImageFile(path, { readOnly: true, format: 'vpc' });
    try {
      expect(image.size).toBe(theirs['virtual-size']);
      expect(image.size).toBe(10514432);
    } finally {
      await image.close();
    }
  });
});
