/**
 * The qemu-img-like commands, run as a user runs them (bin/diskmirror.js,
 * built into dist/node): info, check, map, create, compare, convert, and
 * the 1 GiB convert round trip.
 */
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireQemu, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap, run, tempDir } from '../helpers/qemu.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

const BIN = new URL('../../bin/diskmirror.js', import.meta.url).pathname;
const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext = 'qcow2') => dir.file(`f${++n}.${ext}`);

function dm(...args: string[]) {
  return run(process.execPath, [BIN, ...args], 300_000);
}

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-cmds-');
});
afterAll(() => dir?.remove());

/** Sets the 16-bit refcount of cluster `index` of a default (64 KiB, 16-bit) image qemu made. */
async function setRefcount(path: string, index: number, value: number): Promise<void> {
  const info = JSON.parse(await qemuImg('info', '--output=json', path)) as { 'cluster-size': number };
  expect(info['cluster-size']).toBe(65536);
  const file = readFileSync(path);
  const tableOffset = Number(file.readBigUInt64BE(48));
  const block = Number(file.readBigUInt64BE(tableOffset));
  file.writeUInt16BE(value, block + index * 2);
  writeFileSync(path, file);
}

describe('diskmirror create and info', () => {
  it('creates a qcow2 image with options that qemu-img reads back', async () => {
    const path = name();
    const r = await dm('create', '-f', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=8,lazy_refcounts=on,compat=1.1', path, '10M');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Formatting '.*', fmt=qcow2 cluster_size=4096/);
    const info = JSON.parse(await qemuImg('info', '--output=json', path));
    expect(info['virtual-size']).toBe(10 * MiB);
    expect(info['cluster-size']).toBe(4096);
    expect(info['format-specific'].data['refcount-bits']).toBe(8);
    expect(info['format-specific'].data['lazy-refcounts']).toBe(true);
    expect((await qemuCheck(path)).code).toBe(0);
  });

  it('creates an overlay: the size comes from the backing image, the backing file is named relative to the overlay', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '3M');
    const top = name();
    const r = await dm('create', '-f', 'qcow2', '-b', base.split('/').pop()!, '-F', 'qcow2', top);
    expect(r.code).toBe(0);
    const info = JSON.parse(await qemuImg('info', '--output=json', top));
    expect(info['virtual-size']).toBe(3 * MiB);
    expect(info['backing-filename-format']).toBe('qcow2');
    const ours = await dm('info', '--output=json', top);
    expect(ours.code).toBe(0);
    const j = JSON.parse(ours.stdout);
    expect(j.format).toBe('qcow2');
    expect(j['virtual-size']).toBe(3 * MiB);
    expect(j['cluster-size']).toBe(65536);
    expect(j['format-specific'].data.compat).toBe('1.1');
    expect(j['full-backing-filename']).toBe(base);
    expect(j['actual-size']).toBeGreaterThan(0);
    const human = await dm('info', top);
    expect(human.stdout).toMatch(/backing chain: .* -> .*\(qcow2\)/);
  });

  it('creates raw images (sparse) and rounds sizes up to 512 bytes', async () => {
    const path = name('raw');
    expect((await dm('create', path, '1000')).code).toBe(0);
    expect(statSync(path).size).toBe(1024);
    expect((await dm('create', '-f', 'raw', path, '1G')).code).toBe(0);
    expect(statSync(path).size).toBe(2 ** 30);
    expect(statSync(path).blocks).toBeLessThan(64);
  });

  it('bad usage is one line on stderr and exit 2 (create: 1, as qemu-img create); a bad option value is exit 2 too', async () => {
    for (const args of [['convert', 'only-one'], ['map', '--output=xml', 'x'], ['compare', 'a']]) {
      const r = await dm(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    for (const args of [['create', '-f', 'qcow2'], ['create', '-f', 'qcow2', '-o', 'bogus=1', name(), '1M'], ['create', '-f', 'qcow2', name(), '1Q']]) {
      const r = await dm(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
  });

  it('a missing image or a hostile one is one clear line and exit 1', async () => {
    const missing = await dm('info', dir.file('nope.qcow2'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/ENOENT/);
    const bad = name();
    await qemuImg('create', '-f', 'qcow2', bad, '1M');
    const bytes = readFileSync(bad);
    bytes.writeUInt32BE(30, 20); // cluster_bits
    writeFileSync(bad, bytes);
    const r = await dm('info', bad);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cluster_bits is 30/);
  });
});

describe('diskmirror check', () => {
  it('exit 0 clean, 3 leaks, 2 corruptions, as qemu-img check', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '4M');
    await qemuIo(path, ['write -P 0x11 0 128k']);
    const clean = await dm('check', path);
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(/No errors were found on the image/);

    const leaky = name();
    writeFileSync(leaky, readFileSync(path));
    await setRefcount(leaky, 0, 2); // the header cluster, counted twice
    expect((await qemuCheck(leaky)).code).toBe(3);
    const leak = await dm('check', leaky);
    expect(leak.code).toBe(3);
    expect(leak.stdout).toMatch(/1 leaked clusters were found/);

    const corrupt = name();
    writeFileSync(corrupt, readFileSync(path));
    await setRefcount(corrupt, 4, 0); // a data cluster in use
    expect((await qemuCheck(corrupt)).code).toBe(2);
    const bad = await dm('check', '--output=json', corrupt);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout).corruptions).toBe((await qemuCheck(corrupt)).corruptions);
    expect(bad.stderr).toMatch(/ERROR/);
  });

  it('raw images have nothing to check (exit 63, as qemu-img)', async () => {
    const path = name('raw');
    writeFileSync(path, new Uint8Array(4096));
    expect((await dm('check', path)).code).toBe(63);
  });
});

describe('diskmirror map and compare', () => {
  it('map --output=json prints what qemu-img map prints', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '8M');
    await qemuIo(path, ['write -P 0x11 0 1M', 'write -z 2M 64k', 'write -P 0x12 4M 64k', 'write -P 0x13 4160k 64k']);
    const r = await dm('map', '--output=json', path);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(await qemuMap(path));
    expect(r.stdout).toBe(await qemuImg('map', '--output=json', path));
  });

  it('compare: exit 0 identical, 1 with the first differing offset, 2 on error', async () => {
    const a = name();
    await qemuImg('create', '-f', 'qcow2', a, '4M');
    await qemuIo(a, ['write -P 0x11 0 1M']);
    const b = name('raw');
    await qemuImg('convert', '-O', 'raw', a, b);
    const same = await dm('compare', a, b);
    expect(same.code).toBe(0);
    expect(same.stdout).toMatch(/Images are identical/);
    await qemuIo(b, ['write -P 0x22 1000 1'], ['-f', 'raw']);
    const diff = await dm('compare', a, b);
    expect(diff.code).toBe(1);
    const theirs = await qemuCompare(a, b);
    expect(diff.stdout.trim()).toBe(theirs.stdout.trim());
    const err = await dm('compare', a, dir.file('missing.raw'));
    expect(err.code).toBe(2);
  });

  it('compare: a larger image must read as zeroes past the smaller one, unless -s', async () => {
    const a = name('raw');
    const b = name('raw');
    writeFileSync(a, new Uint8Array(MiB).fill(3));
    const longer = new Uint8Array(MiB + 4096);
    longer.fill(3, 0, MiB);
    writeFileSync(b, longer);
    const r = await dm('compare', a, b);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Image size mismatch/);
    expect((await dm('compare', '-s', a, b)).code).toBe(1);
    longer[MiB + 1000] = 1;
    writeFileSync(b, longer);
    const d = await dm('compare', a, b);
    expect(d.code).toBe(1);
    expect(d.stdout).toMatch(`Content mismatch at offset ${MiB + 512}!`);
  });
});

describe('diskmirror convert', () => {
  it('qcow2 with a backing chain -> qcow2 (compressed) and raw: qemu-img checks and compares', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '6M');
    await qemuIo(base, ['write -P 0x11 0 3M']);
    const top = name();
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await qemuIo(top, ['write -P 0x12 1M 512k', 'write -z 2M 64k']);
    for (const args of [['-O', 'qcow2'], ['-O', 'qcow2', '-c'], ['-O', 'qcow2', '-o', 'cluster_size=2M,extended_l2=on'], ['-O', 'raw'], ['-O', 'qcow2', '-o', 'compat=0.10,cluster_size=512'], ['-O', 'qcow2', '-t', 'writeback']]) {
      const out = name(args[1]);
      const r = await dm('convert', ...args, top, out);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.code, args.join(' ')).toBe(0);
      if (args[1] === 'qcow2') expect((await qemuCheck(out)).code, args.join(' ')).toBe(0);
      expect((await qemuCompare(top, out)).code, args.join(' ')).toBe(0);
    }
  });

  it('-p draws progress only on a terminal; -c needs qcow2', async () => {
    const src = name('raw');
    writeFileSync(src, new Uint8Array(2 * MiB).fill(9));
    const r = await dm('convert', '-p', '-O', 'qcow2', src, name());
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(''); // not a terminal here
    const c = await dm('convert', '-c', '-O', 'raw', src, name('raw'));
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/-c .*qcow2/);
  });

  it('an odd-sized raw source becomes whole sectors, as qemu-img does', async () => {
    const src = name('raw');
    writeFileSync(src, new Uint8Array(5000).fill(7));
    const out = name();
    expect((await dm('convert', '-O', 'qcow2', src, out)).code).toBe(0);
    const info = JSON.parse(await qemuImg('info', '--output=json', out));
    expect(info['virtual-size']).toBe(5120);
    expect((await qemuCompare(src, out)).code).toBe(0);
  });

  it('a 1 GiB fully allocated qcow2 -> raw -> qcow2: qemu-img compare says identical', async () => {
    const seed = name('raw');
    const fd = openSync(seed, 'w');
    const chunk = new Uint8Array(MiB);
    for (let i = 0; i < 1024; i++) {
      randomFillSync(chunk);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const source = name();
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', seed, source);
    rmSync(seed);
    const mid = name('raw');
    const back = name();
    const t0 = performance.now();
    const toRaw = await dm('convert', '-O', 'raw', source, mid);
    const t1 = performance.now();
    const toQcow2 = await dm('convert', '-f', 'raw', '-O', 'qcow2', mid, back);
    const t2 = performance.now();
    expect(toRaw.code, toRaw.stderr).toBe(0);
    expect(toQcow2.code, toQcow2.stderr).toBe(0);
    console.log(`1 GiB convert: qcow2 -> raw ${((t1 - t0) / 1000).toFixed(2)} s, raw -> qcow2 ${((t2 - t1) / 1000).toFixed(2)} s`);
    const cmp = await qemuCompare(source, back);
    expect(cmp.stdout).toMatch(/Images are identical/);
    expect((await qemuCheck(back)).code).toBe(0);
    expect((await qemuCompare(source, mid)).code).toBe(0);
  }, 300_000);
});
