/**
 * Writing VHD (vpc) and VDI with the built command: convert -O and create
 * -f with qemu-img's -o options, and a mirror onto a new target. What
 * diskmirror writes passes `qemu-img check` where qemu-img checks (vdi),
 * equals the source by `qemu-img compare`, and has the size qemu-img gives
 * the same request.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand } from '../helpers/require-program.js';
import { qemuCheck, qemuImg, requireQemu, run, tempDir } from '../helpers/qemu.js';
import { MiB, SUBFORMATS, expectReadsAsQemu, qemuImage, writeSparseRaw } from './vpc-vdi-images.js';

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`w${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-vpc-vdi-write-');
});
afterAll(() => dir.remove());

const BYTES = 13 * MiB + 5 * 512;

async function info(path: string, format: string, tool: 'dm' | 'qemu'): Promise<Record<string, unknown>> {
  if (tool === 'qemu') return JSON.parse(await qemuImg('info', '-f', format, '--output=json', path)) as Record<string, unknown>;
  const r = await dm(['info', '-f', format, '--output=json', path]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

async function expectCheckClean(path: string, format: string): Promise<void> {
  if (format !== 'vdi') return;
  const check = await qemuCheck(path, ['-f', format]);
  expect(check.code, `qemu-img check ${path}: ${check.stderr}`).toBe(0);
}

describe('vpc and vdi write: convert', () => {
  for (const sub of SUBFORMATS) {
    it(`${sub.label}: convert -O ${sub.format} -o ${sub.options} of data, holes and zeroes equals the source by qemu-img compare, passes its check, sized as qemu-img's`, async () => {
      const src = name('raw');
      writeSparseRaw(src, BYTES, 7);
      const out = name(sub.format);
      const r = await dm(['convert', '-f', 'raw', '-O', sub.format, '-o', sub.options, src, out]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', sub.format, src, out]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(out, sub.format);
      const theirsOut = name(sub.format);
      await qemuImg('convert', '-f', 'raw', '-O', sub.format, '-o', sub.options, src, theirsOut);
      const [ours, theirs] = [await info(out, sub.format, 'qemu'), await info(theirsOut, sub.format, 'qemu')];
      expect([ours.format, ours['virtual-size'], ours['cluster-size']]).toEqual([theirs.format, theirs['virtual-size'], theirs['cluster-size']]);
      // diskmirror's info says what qemu-img's says of the image diskmirror wrote.
      const dmInfo = await info(out, sub.format, 'dm');
      expect([dmInfo.format, dmInfo['virtual-size'], dmInfo['cluster-size']]).toEqual([ours.format, ours['virtual-size'], ours['cluster-size']]);
    });

    it(`${sub.label}: converting an image qemu-io changed, back to raw and to ${sub.format} again, keeps every byte`, async () => {
      const src = name(sub.format);
      await qemuImage(sub, name('raw'), src, BYTES, 31);
      const copy = name(sub.format);
      const r = await dm(['convert', '-f', sub.format, '-O', sub.format, '-o', sub.options, src, copy]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', sub.format, '-F', sub.format, src, copy]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(copy, sub.format);
      await expectReadsAsQemu(copy, sub.format, name('raw'));
    });
  }

  it('a dynamic target allocates only the blocks that hold data: holes and zero ranges take no space', async () => {
    const src = name('raw');
    writeSparseRaw(src, BYTES, 8);
    for (const [format, options, maxBytes] of [
      ['vpc', 'subformat=dynamic', 4 * (2 * MiB + 512) + 64 * 1024],
      ['vdi', 'static=off', 4 * MiB + 64 * 1024],
    ] as const) {
      const out = name(format);
      expect((await dm(['convert', '-O', format, '-o', options, src, out])).code).toBe(0);
      const size = Number((await info(out, format, 'qemu'))['actual-size']);
      expect(size, `${format} file of 4 data regions`).toBeLessThanOrEqual(maxBytes);
    }
  });
});

describe('vpc and vdi write: create', () => {
  const sizes = ['1M', '10M', '511M', '40G', '130G', '2040G'];
  for (const size of sizes) {
    it(`create -f vpc ${size} (dynamic, fixed where small, force_size) has qemu-img's virtual size`, async () => {
      const variants = size.endsWith('G') ? ['subformat=dynamic', 'subformat=dynamic,force_size=on'] : ['subformat=dynamic', 'subformat=fixed', 'force_size=on'];
      for (const options of variants) {
        const ours = name('vhd');
        const theirs = name('vhd');
        const r = await dm(['create', '-f', 'vpc', '-o', options, ours, size]);
        expect(r.code, r.stderr).toBe(0);
        await qemuImg('create', '-f', 'vpc', '-o', options, theirs, size);
        const [a, b] = [await info(ours, 'vpc', 'qemu'), await info(theirs, 'vpc', 'qemu')];
        expect(a['virtual-size'], `${size} ${options}`).toBe(b['virtual-size']);
        const cmp = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'vpc', ours, theirs]);
        if (!size.endsWith('G')) expect(cmp.code, `${size} ${options}: ${cmp.stdout}${cmp.stderr}`).toBe(0);
      }
    });
  }

  it('create -f vpc beyond 2040 GiB is refused in one line, as qemu-img refuses it', async () => {
    const r = await dm(['create', '-f', 'vpc', '-o', 'force_size=on', name('vhd'), '3T']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/too large/);
    expect((await run('qemu-img', ['create', '-f', 'vpc', '-o', 'force_size=on', name('vhd'), '3T'])).code).toBe(1);
  });

  for (const options of ['static=off', 'static=on']) {
    it(`create -f vdi -o ${options}: qemu-img check finds no error, the size and the file are qemu-img's`, async () => {
      const ours = name('vdi');
      const theirs = name('vdi');
      expect((await dm(['create', '-f', 'vdi', '-o', options, ours, '9M'])).code).toBe(0);
      await qemuImg('create', '-f', 'vdi', '-o', options, theirs, '9M');
      await expectCheckClean(ours, 'vdi');
      const [a, b] = [await info(ours, 'vdi', 'qemu'), await info(theirs, 'vdi', 'qemu')];
      expect(a['virtual-size']).toBe(b['virtual-size']);
      const { statSync } = await import('node:fs');
      expect(statSync(ours).size).toBe(statSync(theirs).size);
    });
  }

  it('options of another format are refused, naming the option', async () => {
    const vdi = await dm(['create', '-f', 'vdi', '-o', 'subformat=fixed', name('vdi'), '1M']);
    expect(vdi.code).toBe(1);
    expect(vdi.stderr).toMatch(/subformat/);
    const vpc = await dm(['create', '-f', 'vpc', '-o', 'static=on', name('vhd'), '1M']);
    expect(vpc.stderr).toMatch(/static/);
    const raw = await dm(['create', '-f', 'raw', '-o', 'force_size=on', name('raw'), '1M']);
    expect(raw.stderr).toMatch(/force_size/);
  });
});

describe('vpc and vdi write: a mirror onto a new target', () => {
  for (const sub of SUBFORMATS) {
    it(`mirror -O ${sub.format} onto a new target completes with the source's bytes and size (${sub.label} source)`, async () => {
      const src = name(sub.format);
      await qemuImage(sub, name('raw'), src, BYTES, 55);
      for (const target of ['vpc', 'vdi'] as const) {
        const out = name(target);
        const r = await dm(['mirror', '-f', sub.format, '-O', target, src, out]);
        expect(r.code, r.stderr).toBe(0);
        const cmp = await run('qemu-img', ['compare', '-f', sub.format, '-F', target, src, out]);
        expect(cmp.stdout, `${sub.label} -> ${target}: ${cmp.stderr}`).toMatch(/^Images are identical/);
        // A mirror's target has the source's size exactly (a vpc target with force_size where no geometry fits).
        expect((await info(out, target, 'qemu'))['virtual-size']).toBe((await info(src, sub.format, 'qemu'))['virtual-size']);
        await expectCheckClean(out, target);
      }
    });
  }
});
