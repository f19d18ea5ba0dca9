/**
 * Writing VMDK with the built command: convert -O vmdk and create -f vmdk
 * with qemu-img's -o options (subformat, adapter_type), and a mirror onto
 * a new target. What diskmirror writes passes `qemu-img check`, equals the
 * source by `qemu-img compare`, and info agrees with qemu-img's (format,
 * virtual size, create type); the descriptor says what qemu-img's says
 * (the adapter and its geometry). A stream takes each grain once, whole,
 * as in QEMU.
 */
import { readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import { createImage } from '../../src/format/open.js';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand } from '../helpers/require-program.js';
import { qemuCheck, qemuImg, requireQemu, run, tempDir } from '../helpers/qemu.js';
import { MiB, expectReadsAsQemu, writeSparseRaw } from './vpc-vdi-images.js';
import { VMDK_SUBFORMATS, qemuVmdk } from './vmdk-images.js';

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`w${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-vmdk-write-');
});
afterAll(() => dir.remove());

const BYTES = 37 * MiB + 5 * 512;
const WRITTEN = ['monolithicSparse', 'streamOptimized'] as const;

async function qemuInfo(path: string): Promise<Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } }> {
  return JSON.parse(await qemuImg('info', '-f', 'vmdk', '--output=json', path)) as Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } };
}

async function expectCheckClean(path: string): Promise<void> {
  const check = await qemuCheck(path, ['-f', 'vmdk']);
  expect(check.code, `qemu-img check ${path}: ${check.stderr}`).toBe(0);
}

/** The descriptor's lines but the CID (random in either). */
function descriptorLines(path: string): string[] {
  const bytes = readFileSync(path).subarray(512, 512 + 10240);
  const text = bytes.subarray(0, bytes.indexOf(0) < 0 ? bytes.length : bytes.indexOf(0)).toString('latin1');
  return text.split('\n').filter((l) => !l.startsWith('CID=') && !l.startsWith('RW '));
}

describe('vmdk write: convert', () => {
  for (const subformat of WRITTEN) {
    it(`convert -O vmdk -o subformat=${subformat} of data, holes and zeroes equals the source by qemu-img compare, passes its check, info as qemu-img's`, async () => {
      const src = name('raw');
      writeSparseRaw(src, BYTES, 7);
      const out = name('vmdk');
      const r = await dm(['convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, out]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, out]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(out);
      const theirsOut = name('vmdk');
      await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, theirsOut);
      const [ours, theirs] = [await qemuInfo(out), await qemuInfo(theirsOut)];
      expect([ours.format, ours['virtual-size'], ours['cluster-size'], ours['format-specific'].data['create-type']]).toEqual([
        theirs.format,
        theirs['virtual-size'],
        theirs['cluster-size'],
        theirs['format-specific'].data['create-type'],
      ]);
      // Holes take no space: the file is about as large as qemu-img's (4 data regions, a grain each at most more).
      expect(statSync(out).size).toBeLessThanOrEqual(statSync(theirsOut).size + 4 * 65536);
      const dmInfo = JSON.parse((await dm(['info', '--output=json', out])).stdout) as Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } };
      expect([dmInfo.format, dmInfo['virtual-size'], dmInfo['format-specific'].data['create-type']]).toEqual([ours.format, ours['virtual-size'], subformat]);
    });

    it(`${subformat}: converting a vmdk that qemu-io changed to ${subformat} again keeps every byte`, async () => {
      const src = name('vmdk');
      await qemuVmdk(VMDK_SUBFORMATS[0]!, name('raw'), src, BYTES, 31);
      const copy = name('vmdk');
      const r = await dm(['convert', '-f', 'vmdk', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, copy]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'vmdk', src, copy]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(copy);
      await expectReadsAsQemu(copy, 'vmdk', name('raw'));
    });
  }
});

describe('vmdk write: create', () => {
  for (const adapter of ['ide', 'buslogic', 'lsilogic', 'legacyESX']) {
    it(`create -f vmdk -o adapter_type=${adapter}: the descriptor (adapter, geometry) and the file are qemu-img's`, async () => {
      for (const size of ['1M', '100M', '3G']) {
        const ours = name('vmdk');
        const theirs = name('vmdk');
        const r = await dm(['create', '-f', 'vmdk', '-o', `adapter_type=${adapter}`, ours, size]);
        expect(r.code, r.stderr).toBe(0);
        await qemuImg('create', '-f', 'vmdk', '-o', `adapter_type=${adapter}`, theirs, size);
        await expectCheckClean(ours);
        expect(descriptorLines(ours)).toEqual(descriptorLines(theirs));
        expect(statSync(ours).size).toBe(statSync(theirs).size);
        expect((await qemuInfo(ours))['virtual-size']).toBe((await qemuInfo(theirs))['virtual-size']);
      }
    });
  }

  it('create -f vmdk -o subformat=streamOptimized: qemu-img reads it as its own stream and checks it clean', async () => {
    const ours = name('vmdk');
    expect((await dm(['create', '-f', 'vmdk', '-o', 'subformat=streamOptimized', ours, '5M'])).code).toBe(0);
    const data = (await qemuInfo(ours))['format-specific'].data;
    expect(data['create-type']).toBe('streamOptimized');
    expect((data.extents as Array<{ compressed?: boolean }>)[0]!.compressed).toBe(true);
    await expectCheckClean(ours);
  });

  it('options of another format, and subformats diskmirror does not write, are refused naming them', async () => {
    const foreign = await dm(['create', '-f', 'vmdk', '-o', 'static=on', name('vmdk'), '1M']);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/static/);
    const flat = await dm(['create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', name('vmdk'), '1M']);
    expect(flat.code).toBe(1);
    expect(flat.stderr).toMatch(/monolithicFlat/);
    const adapter = await dm(['create', '-f', 'vmdk', '-o', 'adapter_type=scsi', name('vmdk'), '1M']);
    expect(adapter.code).toBe(1);
    expect(adapter.stderr).toMatch(/adapter_type/);
  });
});

describe('vmdk write: a stream takes each grain once, whole (as QEMU)', () => {
  it('a second write to a grain fails with EIO, a piece of a grain with EINVAL; the last grain may be short', async () => {
    const file = new MemoryDevice(0);
    const image = await createImage(file, { format: 'vmdk', size: 3 * 65536 + 4096, subformat: 'streamOptimized' });
    await image.write(0, new Uint8Array(65536).fill(1));
    await expect(image.write(0, new Uint8Array(65536).fill(2))).rejects.toMatchObject({ code: 'EIO' });
    await expect(image.write(65536, new Uint8Array(4096))).rejects.toMatchObject({ code: 'EINVAL' });
    await image.write(3 * 65536, new Uint8Array(4096).fill(3));
    // Zeroes where nothing was written cost nothing; where a grain was written they are refused as a rewrite.
    await image.writeZeroes(65536, 65536, { unmap: false });
    await expect(image.writeZeroes(0, 65536, { unmap: false })).rejects.toMatchObject({ code: 'EIO' });
    const back = new Uint8Array(image.size);
    await image.read(0, back);
    expect(back.subarray(0, 65536).every((b) => b === 1)).toBe(true);
    expect(back.subarray(65536, 3 * 65536).every((b) => b === 0)).toBe(true);
    expect(back.subarray(3 * 65536).every((b) => b === 3)).toBe(true);
    await image.close();
  });
});

describe('vmdk write: a mirror onto a new target', () => {
  for (const sub of VMDK_SUBFORMATS.filter((s) => !s.label.startsWith('twoGb'))) {
    it(`mirror -O vmdk onto a new target completes with the source's bytes and size (${sub.label} source)`, async () => {
      const src = name('vmdk');
      await qemuVmdk(sub, name('raw'), src, BYTES, 55);
      const out = name('vmdk');
      const r = await dm(['mirror', '-f', 'vmdk', '-O', 'vmdk', src, out]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'vmdk', src, out]);
      expect(cmp.stdout, `${sub.label}: ${cmp.stderr}`).toMatch(/^Images are identical/);
      expect((await qemuInfo(out))['virtual-size']).toBe((await qemuInfo(src))['virtual-size']);
      await expectCheckClean(out);
    });
  }

  it('a mirror into an existing stream (qemu-img create -o subformat=streamOptimized) writes each grain once and completes; a second mirror into it fails with EIO, as QEMU refuses the rewrite', async () => {
    const src = name('raw');
    writeSparseRaw(src, 5 * MiB, 77);
    const out = name('vmdk');
    await qemuImg('create', '-f', 'vmdk', '-o', 'subformat=streamOptimized', out, '5M');
    const first = await dm(['mirror', src, out]);
    expect(first.code, first.stderr).toBe(0);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, out]);
    expect(cmp.stdout, cmp.stderr).toMatch(/^Images are identical/);
    await expectCheckClean(out);
    const again = await dm(['mirror', src, out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/EIO.*Could not write to allocated cluster for streamOptimized/);
  });

  it('a qcow2 source mirrors to vmdk and back to qcow2 with every byte', async () => {
    const src = name('qcow2');
    writeSparseRaw(name('raw'), BYTES, 66);
    await qemuImg('convert', '-O', 'qcow2', dir.file(`w${n}.raw`), src);
    const mid = name('vmdk');
    const back = name('qcow2');
    expect((await dm(['mirror', '-O', 'vmdk', src, mid])).code).toBe(0);
    expect((await dm(['mirror', '-O', 'qcow2', mid, back])).code).toBe(0);
    const cmp = await run('qemu-img', ['compare', src, back]);
    expect(cmp.stdout, cmp.stderr).toMatch(/^Images are identical/);
  });
});
