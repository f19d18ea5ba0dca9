/**
 * VHDX against qemu-img 7.2, with images made at test time by qemu-img and
 * qemu-io (data, holes, zeroes written): every byte read as `qemu-img
 * convert -O raw` reads it; the map's data extents where the BAT puts
 * them; info and probing as qemu-img's; what diskmirror writes (convert,
 * create, mirror) passes `qemu-img check`, equals its source by `qemu-img
 * compare` and has qemu-img's sizes; check reports a truncated image as
 * qemu-img does, with its messages and exit code.
 */
import { readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import { mapImage, type MapExtent } from '../../src/format/map.js';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand } from '../helpers/require-program.js';
import { qemuCheck, qemuImg, requireQemu, run, tempDir } from '../helpers/qemu.js';
import { type Subformat, MiB, expectReadsAsQemu, qemuImage, qemuRaw, writeSparseRaw } from './vpc-vdi-images.js';

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`x${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-vhdx-');
});
afterAll(() => dir.remove());

export const VHDX_SUBFORMATS: readonly Subformat[] = [
  { label: 'vhdx dynamic, 1 MiB blocks', format: 'vhdx', options: 'subformat=dynamic,block_size=1M', dynamic: true },
  { label: 'vhdx dynamic, 2 MiB blocks', format: 'vhdx', options: 'subformat=dynamic,block_size=2M', dynamic: true },
  { label: 'vhdx dynamic, default blocks (8 MiB)', format: 'vhdx', options: 'subformat=dynamic', dynamic: true },
  { label: 'vhdx fixed, 1 MiB blocks', format: 'vhdx', options: 'subformat=fixed,block_size=1M', dynamic: false },
  { label: 'vhdx fixed, default blocks', format: 'vhdx', options: 'subformat=fixed', dynamic: false },
];

/** Several blocks of any size above, the last one partial. */
const BYTES = 13 * MiB + 5 * 512;

async function info(path: string, tool: 'dm' | 'qemu'): Promise<Record<string, unknown>> {
  if (tool === 'qemu') return JSON.parse(await qemuImg('info', '-f', 'vhdx', '--output=json', path)) as Record<string, unknown>;
  const r = await dm(['info', '-f', 'vhdx', '--output=json', path]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

async function expectCheckClean(path: string): Promise<void> {
  const check = await qemuCheck(path, ['-f', 'vhdx']);
  expect(check.code, `qemu-img check ${path}: ${check.stderr}`).toBe(0);
}

describe('vhdx read: every byte as qemu-img reads it', () => {
  for (const sub of VHDX_SUBFORMATS) {
    it(`${sub.label}: data, holes and zeroes read as qemu-img convert -O raw reads them; map's data extents are where the BAT puts them`, async () => {
      const path = name('vhdx');
      await qemuImage(sub, name('raw'), path, BYTES, 101 + n);
      // qemu-img's vhdx driver has no discard: the range keeps its data (both read it so).
      await run('qemu-io', ['-f', 'vhdx', '-c', 'discard 2M 1M', '-c', 'write -z 5M 1M', path]);
      const ours = await expectReadsAsQemu(path, 'vhdx', name('raw'));
      expect(ours.some((b) => b !== 0)).toBe(true);
      // qemu-img maps a vhdx as data throughout (the driver has no block status): the extents are checked against the bytes instead.
      const file = readFileSync(path);
      const image = await openImageFile(path, { readOnly: true, format: 'vhdx' });
      const extents: MapExtent[] = [];
      try {
        await mapImage(image, (e) => extents.push(e));
      } finally {
        await image.close();
      }
      expect(extents.reduce((sum, e) => sum + e.length, 0)).toBe(BYTES);
      for (const e of extents) {
        const guest = ours.subarray(e.start, e.start + e.length);
        if (!e.data) expect(guest.every((b) => b === 0), `zero extent at ${e.start}`).toBe(true);
        else expect(Buffer.compare(file.subarray(e.offset!, e.offset! + e.length), guest), `data extent at ${e.start}`).toBe(0);
      }
      if (sub.dynamic && sub.options.includes('block_size=1M')) expect(extents.some((e) => !e.data)).toBe(true);
    });
  }
});

describe('vhdx read: info and probing as qemu-img', () => {
  for (const sub of VHDX_SUBFORMATS) {
    it(`${sub.label}: info --output=json agrees on format, virtual size, cluster size and (no) format-specific fields; the human lines too`, async () => {
      const path = name('vhdx');
      await qemuImg('create', '-f', 'vhdx', '-o', sub.options, path, String(BYTES));
      const [ours, theirs] = [await info(path, 'dm'), await info(path, 'qemu')];
      expect(ours.format).toBe('vhdx');
      expect([ours['virtual-size'], ours['cluster-size'], ours['format-specific']]).toEqual([theirs['virtual-size'], theirs['cluster-size'], theirs['format-specific']]);
      const human = await dm(['info', path]);
      const qemuHuman = await qemuImg('info', path);
      const pick = (text: string) => text.split('\n').filter((l) => /^(file format|virtual size|cluster_size):/.test(l));
      expect(pick(human.stdout)).toEqual(pick(qemuHuman));
    });
  }

  it('a VHDX is recognised by its "vhdxfile" signature, as qemu-img probes it; a raw file starting with other bytes is raw', async () => {
    const path = name('img');
    await qemuImg('create', '-f', 'vhdx', path, '3M');
    expect((JSON.parse((await dm(['info', '--output=json', path])).stdout) as { format: string }).format).toBe('vhdx');
    const raw = name('img');
    writeSparseRaw(raw, MiB, 3);
    expect((JSON.parse((await dm(['info', '--output=json', raw])).stdout) as { format: string }).format).toBe('raw');
  });
});

describe('vhdx write: convert, create, mirror', () => {
  for (const sub of VHDX_SUBFORMATS) {
    it(`${sub.label}: convert -O vhdx -o ${sub.options} of data, holes and zeroes equals the source, passes qemu-img check, sized as qemu-img's`, async () => {
      const src = name('raw');
      writeSparseRaw(src, BYTES, 7);
      const out = name('vhdx');
      const r = await dm(['convert', '-f', 'raw', '-O', 'vhdx', '-o', sub.options, src, out]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', src, out]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(out);
      const theirsOut = name('vhdx');
      await qemuImg('convert', '-f', 'raw', '-O', 'vhdx', '-o', sub.options, src, theirsOut);
      const [ours, theirs] = [await info(out, 'qemu'), await info(theirsOut, 'qemu')];
      expect([ours.format, ours['virtual-size'], ours['cluster-size']]).toEqual([theirs.format, theirs['virtual-size'], theirs['cluster-size']]);
      // A fixed image is as long as qemu-img creates it, written in place (qemu-img's convert, whose blocks start ZERO, appends its writes).
      if (!sub.dynamic) {
        const made = name('vhdx');
        await qemuImg('create', '-f', 'vhdx', '-o', sub.options, made, String(BYTES));
        expect(statSync(out).size).toBe(statSync(made).size);
      }
    });

    it(`${sub.label}: an image qemu-io changed, converted to vhdx again, keeps every byte`, async () => {
      const src = name('vhdx');
      await qemuImage(sub, name('raw'), src, BYTES, 31);
      const copy = name('vhdx');
      const r = await dm(['convert', '-f', 'vhdx', '-O', 'vhdx', '-o', sub.options, src, copy]);
      expect(r.code, r.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', src, copy]);
      expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
      await expectCheckClean(copy);
      await expectReadsAsQemu(copy, 'vhdx', name('raw'));
    });
  }

  it('a dynamic target allocates only the blocks that hold data: holes take no space', async () => {
    const src = name('raw');
    writeSparseRaw(src, BYTES, 8);
    const out = name('vhdx');
    expect((await dm(['convert', '-O', 'vhdx', '-o', 'block_size=1M', src, out])).code).toBe(0);
    // The header section, log, BAT and metadata (a few KiB written), and at most 4 data regions of at most 2 blocks each.
    expect(Number((await info(out, 'qemu'))['actual-size'])).toBeLessThanOrEqual(8 * MiB + 256 * 1024);
  });

  const sizes: [string, string][] = [
    ['1M', 'subformat=dynamic'],
    ['0', 'subformat=dynamic'],
    ['10M', 'subformat=fixed'],
    ['5G', 'subformat=dynamic'],
    ['200G', 'subformat=dynamic'],
    ['40T', 'subformat=dynamic'],
    ['3M', 'block_size=300M'],
    ['3M', 'log_size=3M'],
  ];
  for (const [size, options] of sizes) {
    it(`create -f vhdx -o ${options} ${size}: qemu-img's virtual size, block size and file size; qemu-img check clean`, async () => {
      const ours = name('vhdx');
      const theirs = name('vhdx');
      const r = await dm(['create', '-f', 'vhdx', '-o', options, ours, size]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe((await qemuImg('create', '-f', 'vhdx', '-o', options, theirs, size)).trim().replace(theirs, ours));
      const [a, b] = [await info(ours, 'qemu'), await info(theirs, 'qemu')];
      expect([a['virtual-size'], a['cluster-size']]).toEqual([b['virtual-size'], b['cluster-size']]);
      expect(statSync(ours).size).toBe(statSync(theirs).size);
      await expectCheckClean(ours);
    });
  }

  for (const [options, message] of [
    ['block_size=5M', /power of two/],
    ['log_size=0', /multiple of 1 MB/],
  ] as const) {
    it(`create -o ${options} is refused in one line, as qemu-img refuses it`, async () => {
      const r = await dm(['create', '-f', 'vhdx', '-o', options, name('vhdx'), '8M']);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      const q = await run('qemu-img', ['create', '-f', 'vhdx', '-o', options, name('vhdx'), '8M']);
      expect(q.code).toBe(1);
      expect(q.stderr).toMatch(message);
    });
  }

  it('create -f vhdx beyond 64 TiB is refused, as qemu-img refuses it', async () => {
    const r = await dm(['create', '-f', 'vhdx', name('vhdx'), '65T']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/max of 64TB/);
  });

  for (const source of ['vhdx dynamic', 'qcow2'] as const) {
    it(`mirror -O vhdx onto a new target completes with the source's bytes and size (${source} source), and a vhdx source mirrors to qcow2`, async () => {
      const src = name(source === 'qcow2' ? 'qcow2' : 'vhdx');
      if (source === 'qcow2') {
        await qemuImg('create', '-f', 'qcow2', src, String(BYTES));
        await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -z 6M 1M', src]);
      } else await qemuImage(VHDX_SUBFORMATS[0]!, name('raw'), src, BYTES, 55);
      const format = source === 'qcow2' ? 'qcow2' : 'vhdx';
      for (const target of ['vhdx', 'qcow2'] as const) {
        const out = name(target);
        const r = await dm(['mirror', '-f', format, '-O', target, src, out]);
        expect(r.code, r.stderr).toBe(0);
        const cmp = await run('qemu-img', ['compare', '-f', format, '-F', target, src, out]);
        expect(cmp.stdout, `${source} -> ${target}: ${cmp.stderr}`).toMatch(/^Images are identical/);
        const check = await qemuCheck(out, ['-f', target]);
        expect(check.code, check.stderr).toBe(0);
      }
    });
  }
});

describe('vhdx images qemu-img 7.2 does not read either', () => {
  for (const [label, bits, sectorBytes, field] of [
    ['a differencing image (has_parent) without a parent locator', 2, 512, 'has_parent'],
    ['4096-byte logical sectors', 0, 4096, 'logical_sector_size'],
  ] as const) {
    it(`${label} is refused in one line, naming the field, as qemu-img refuses it`, async () => {
      const path = name('vhdx');
      await qemuImg('create', '-f', 'vhdx', path, '4M');
      const file = new Uint8Array(readFileSync(path));
      const view = new DataView(file.buffer);
      const metadata = Number(view.getBigUint64(192 * 1024 + 16 + 32 + 16, true));
      // qemu-img's items, in its order at 64 KiB: file parameters (block size, bits), size, page 83, logical and physical sector size.
      view.setUint32(metadata + 64 * 1024 + 4, bits, true);
      view.setUint32(metadata + 64 * 1024 + 32, sectorBytes, true);
      writeFileSync(path, file);
      const ours = await dm(['info', path]);
      expect(ours.code).toBe(1);
      expect(ours.stderr.trim().split('\n')).toHaveLength(1);
      expect(ours.stderr).toMatch(new RegExp(field));
      expect((await run('qemu-img', ['info', path])).code).toBe(1);
    });
  }
});

describe('vhdx check, as qemu-img check', () => {
  it('an image qemu-img made: no errors, exit 0, the same JSON', async () => {
    const path = name('vhdx');
    await qemuImage(VHDX_SUBFORMATS[0]!, name('raw'), path, BYTES, 77);
    const ours = await dm(['check', '--output=json', path]);
    const theirs = await run('qemu-img', ['check', '--output=json', path]);
    expect([ours.code, JSON.parse(ours.stdout)]).toEqual([theirs.code, JSON.parse(theirs.stdout)]);
  });

  it('a truncated image: the blocks past the end reported in qemu-img words, exit 2, the same JSON; open refuses it in one line', async () => {
    const path = name('vhdx');
    await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', path, '6M');
    await run('qemu-io', ['-f', 'vhdx', '-c', 'write -P 1 0 6M', path]);
    truncateSync(path, statSync(path).size - 2 * MiB - 5000);
    const ours = await dm(['check', path]);
    const theirs = await run('qemu-img', ['check', path]);
    expect(ours.code).toBe(2);
    expect(ours.code).toBe(theirs.code);
    const lines = (text: string) => text.split('\n').filter((l) => /VHDX BAT entry/.test(l)).map((l) => l.replace(/^qemu-img: /, ''));
    expect(lines(ours.stderr)).toEqual(lines(theirs.stderr));
    expect(lines(ours.stderr).length).toBeGreaterThan(1);
    expect(ours.stdout).toBe(theirs.stdout);
    const json = [await dm(['check', '--output=json', path]), await run('qemu-img', ['check', '--output=json', path])].map((r) => JSON.parse(r.stdout) as unknown);
    expect(json[0]).toEqual(json[1]);
    const convert = await dm(['convert', '-O', 'raw', path, name('raw')]);
    expect(convert.code).toBe(1);
    expect(convert.stderr.trim().split('\n')).toHaveLength(1);
    expect(convert.stderr).toMatch(/VHDX BAT entry \d+ .*truncated/);
    expect(await qemuRaw(path, 'vhdx', name('raw')).catch(() => 'refused')).toBe('refused');
  });
});
