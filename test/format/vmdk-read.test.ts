/**
 * Reading VMDK images made by qemu-img and qemu-io, each subformat with
 * data, holes and zero ranges: every byte as `qemu-img convert -O raw`
 * reads it (twoGbMaxExtent images, larger than one 2 GiB extent, through
 * `qemu-img compare` against diskmirror's copy), the map as `qemu-img map`,
 * `info` as `qemu-img info` (create type, CIDs, the extents), probing as
 * qemu-img probes, a stream whose header is in a footer, a missing extent
 * file named in one line, and an OVA opened as the disk it holds.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import { mapImage, type MapExtent } from '../../src/format/map.js';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand, requireProgram } from '../helpers/require-program.js';
import { normalizeRanges, qemuCompare, qemuImg, qemuMap, requireQemu, tempDir } from '../helpers/qemu.js';
import { qemuIoBatched } from './qcow2-images.js';
import { MiB, expectReadsAsQemu } from './vpc-vdi-images.js';
import { VMDK_SUBFORMATS, moveHeaderToFooter, qemuVmdk } from './vmdk-images.js';

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`r${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  requireProgram('tar', 'the OVA test packs one');
  dir = tempDir('diskmirror-vmdk-read-');
});
afterAll(() => dir.remove());

/** Not a whole number of grains (64 KiB), across several grain tables (32 MiB each) of a sparse image. */
const BYTES = 37 * MiB + 5 * 512;
const SMALL = VMDK_SUBFORMATS.filter((s) => !s.label.startsWith('twoGb'));

describe('vmdk read: every byte as qemu-img reads it', () => {
  for (const sub of SMALL) {
    it(`${sub.label}: data, holes and zero ranges read as qemu-img convert -O raw reads them`, async () => {
      const path = name('vmdk');
      await qemuVmdk(sub, name('raw'), path, BYTES, 101);
      const ours = await expectReadsAsQemu(path, 'vmdk', name('raw'));
      expect(ours.some((b) => b !== 0)).toBe(true);
    });
  }

  for (const sub of VMDK_SUBFORMATS.filter((s) => s.label.startsWith('twoGb'))) {
    it(`${sub.label}: an image of two extents (data on both sides of the 2 GiB boundary) copies as qemu-img reads it`, async () => {
      const path = name('vmdk');
      await qemuImg('create', '-f', 'vmdk', '-o', sub.options, path, `${2048 + 37}M`);
      const edge = 2048 * MiB;
      await qemuIoBatched(path, [`write -P 0x5a ${edge - 3 * 65536 - 512} 200000`, `write -P 0x33 ${edge + 512} 70000`, 'write -P 0x11 0 4096', `write -z ${edge - 65536} 4096`], ['-f', 'vmdk']);
      const copy = name('raw');
      const r = await dm(['convert', '-f', 'vmdk', '-O', 'raw', path, copy]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await qemuCompare(path, copy);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    }, 120_000);
  }

  it('streamOptimized with its header in a footer (the stream VMware writes) reads as qemu-img reads it', async () => {
    const path = name('vmdk');
    await qemuVmdk(VMDK_SUBFORMATS.find((s) => s.label === 'streamOptimized')!, name('raw'), path, BYTES, 404);
    moveHeaderToFooter(path);
    await expectReadsAsQemu(path, 'vmdk', name('raw'));
  });
});

describe('vmdk read: the map as qemu-img map', () => {
  for (const sub of SMALL.filter((s) => !s.extentFiles)) {
    it(`${sub.label}: data, zero and unallocated extents (and offsets in the file) agree with qemu-img map`, async () => {
      const path = name('vmdk');
      await qemuVmdk(sub, name('raw'), path, BYTES, 202);
      const image = await openImageFile(path, { readOnly: true, format: 'vmdk' });
      try {
        const ours: MapExtent[] = [];
        await mapImage(image, (e) => ours.push(e));
        const theirs = await qemuMap(path);
        expect(normalizeRanges(ours)).toEqual(normalizeRanges(theirs));
        expect(ours.map((e) => [e.start, e.length, e.present, e.zero, e.data, e.offset])).toEqual(theirs.map((e) => [e.start, e.length, e.present, e.zero, e.data, e.offset]));
        expect(ours.some((e) => !e.data)).toBe(true);
      } finally {
        await image.close();
      }
    });
  }
});

describe('vmdk read: info as qemu-img info', () => {
  for (const sub of VMDK_SUBFORMATS) {
    it(`${sub.label}: info --output=json agrees on format, virtual size, cluster size and the format-specific data; the human lines too`, async () => {
      const path = name('vmdk');
      await qemuImg('create', '-f', 'vmdk', '-o', sub.options, path, sub.label.startsWith('twoGb') ? '3G' : '10M');
      const ours = await dm(['info', '--output=json', path]);
      expect(ours.code, ours.stderr).toBe(0);
      const o = JSON.parse(ours.stdout) as Record<string, unknown>;
      const theirs = JSON.parse(await qemuImg('info', '--output=json', path)) as Record<string, unknown>;
      expect(o.format).toBe('vmdk');
      for (const key of ['virtual-size', 'cluster-size', 'format-specific', 'filename', 'dirty-flag']) expect(o[key], key).toEqual(theirs[key]);
      const human = await dm(['info', path]);
      const qemuHuman = await qemuImg('info', path);
      expect(human.stdout.trimEnd().split('\n').filter((l) => !l.startsWith('disk size'))).toEqual(qemuHuman.trimEnd().split('\n').filter((l) => !l.startsWith('disk size')));
    });
  }

  it('probing: sparse files and descriptor files are vmdk, as in qemu-img', async () => {
    for (const sub of VMDK_SUBFORMATS) {
      const path = name('img');
      await qemuImg('create', '-f', 'vmdk', '-o', sub.options, path, '3M');
      const ours = JSON.parse((await dm(['info', '--output=json', path])).stdout) as { format: string };
      expect(ours.format, sub.label).toBe('vmdk');
    }
    // A descriptor after comment and blank lines; text that is not one stays raw.
    const text = name('img');
    writeFileSync(text, '# a comment\n   \nversion=1\nCID=1\n');
    const theirs = await dm(['info', '--output=json', text]);
    expect(theirs.stdout + theirs.stderr).toMatch(/vmdk|createType/);
    const other = name('img');
    writeFileSync(other, '# a comment\nhello\n'.padEnd(4096, ' '));
    expect((JSON.parse((await dm(['info', '--output=json', other])).stdout) as { format: string }).format).toBe('raw');
  });
});

describe('vmdk read: extent files', () => {
  it('a missing extent file is refused in one line that names it', async () => {
    const sub = tempDir('diskmirror-vmdk-missing-');
    try {
      const path = sub.file('disk.vmdk');
      await qemuImg('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', path, '5M');
      rmSync(sub.file('disk-flat.vmdk'));
      const r = await dm(['info', path]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain("'disk-flat.vmdk'");
    } finally {
      sub.remove();
    }
  });

  it('extent files are found beside the descriptor, not in the working directory', async () => {
    const sub = tempDir('diskmirror-vmdk-beside-');
    try {
      const path = sub.file('disk.vmdk');
      await qemuImg('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', path, '5M');
      await qemuIoBatched(path, ['write -P 0x42 4096 8192'], ['-f', 'vmdk']);
      await expectReadsAsQemu(path, 'vmdk', name('raw'));
    } finally {
      sub.remove();
    }
  });
});

describe('OVA: a tar holding an OVF and its disk', () => {
  const ovf = '<?xml version="1.0"?>\n<Envelope><References><File ovf:href="disk1.vmdk" ovf:id="file1"/></References></Envelope>\n';

  it('opens as the one VMDK it holds, and reads as that disk', async () => {
    const pack = dir.file(`ova${++n}`);
    mkdirSync(pack);
    writeFileSync(`${pack}/appliance.ovf`, ovf);
    await qemuVmdk(VMDK_SUBFORMATS.find((s) => s.label === 'streamOptimized')!, name('raw'), `${pack}/disk1.vmdk`, 3 * MiB + 512, 505);
    writeFileSync(`${pack}/appliance.mf`, 'SHA256(disk1.vmdk)= 00\n');
    for (const format of ['ustar', 'gnu']) {
      const ova = name('ova');
      execFileSync('tar', [`--format=${format}`, '-cf', ova, '-C', pack, 'appliance.ovf', 'disk1.vmdk', 'appliance.mf']);
      const info = JSON.parse((await dm(['info', '--output=json', ova])).stdout) as { format: string; 'virtual-size': number };
      expect(info.format).toBe('vmdk');
      expect(info['virtual-size']).toBe(3 * MiB + 512);
      const copy = name('raw');
      const r = await dm(['convert', '-O', 'raw', ova, copy]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await qemuCompare(`${pack}/disk1.vmdk`, copy);
      expect(cmp.code, cmp.stdout).toBe(0);
    }
  });

  it('holding two disks, is refused in one line naming both', async () => {
    const pack = dir.file(`ova${++n}`);
    mkdirSync(pack);
    writeFileSync(`${pack}/appliance.ovf`, ovf);
    await qemuImg('create', '-f', 'vmdk', `${pack}/disk1.vmdk`, '1M');
    await qemuImg('create', '-f', 'vmdk', `${pack}/disk2.vmdk`, '1M');
    const ova = name('ova');
    execFileSync('tar', ['--format=ustar', '-cf', ova, '-C', pack, 'appliance.ovf', 'disk1.vmdk', 'disk2.vmdk']);
    const r = await dm(['info', ova]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/disk1\.vmdk, disk2\.vmdk/);
  });
});
