/**
 * What users parse: `info` and `check` print what qemu-img 7.2 prints, key
 * for key and (where diskmirror can know the values) byte for byte, with
 * the same exit codes; and a backing chain 300 images deep opens, lists,
 * maps and converts as qemu-img does it. Both tools run on the same images
 * (made here with qemu-img and qemu-io), from the images' directory, so
 * relative names are compared too.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireQemu, tempDir } from '../helpers/qemu.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

const BIN = new URL('../../bin/diskmirror.js', import.meta.url).pathname;
let dir: ReturnType<typeof tempDir>;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program in the images' directory. */
function runIn(program: string, args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(program, args, { cwd: dir.path, maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const dm = (...args: string[]) => runIn(process.execPath, [BIN, ...args]);
const qemu = (...args: string[]) => runIn('qemu-img', args);

async function sh(program: string, ...args: string[]): Promise<void> {
  const r = await runIn(program, args);
  if (r.code !== 0 || /error|failed/i.test(r.stdout + r.stderr)) throw new Error(`${program} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
}

/** Both tools on the same arguments: the same exit code, and the same stdout. */
async function same(...args: string[]): Promise<{ ours: Result; theirs: Result }> {
  const [ours, theirs] = await Promise.all([dm(...args), qemu(...args)]);
  const what = args.join(' ');
  expect(ours.code, `${what}: ${ours.stderr}`).toBe(theirs.code);
  expect(ours.stdout, what).toBe(theirs.stdout);
  return { ours, theirs };
}

/** Sets the 16-bit refcount of cluster `index` (64 KiB clusters, 16-bit refcounts, as qemu-img makes by default). */
function setRefcount(file: string, index: number, value: number): void {
  const bytes = readFileSync(dir.file(file));
  const block = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(48))));
  bytes.writeUInt16BE(value, block + index * 2);
  writeFileSync(dir.file(file), bytes);
}

beforeAll(async () => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-parity-');
  mkdirSync(dir.file('sub'));
  await sh('qemu-img', 'create', '-q', '-f', 'raw', 'disk.raw', '1M');
  await sh('qemu-io', '-f', 'raw', '-c', 'write -P 0x11 0 64k', 'disk.raw');
  writeFileSync(dir.file('odd.raw'), new Uint8Array(1000).fill(1)); // not whole sectors
  writeFileSync(dir.file('empty.raw'), new Uint8Array(0));
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '4M');
  await sh('qemu-io', '-c', 'write -P 0x22 0 128k', 'base.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
  await sh('qemu-io', '-c', 'write -P 0x33 64k 64k', 'top.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'disk.raw', '-F', 'raw', 'over-raw.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/over.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4096', 'v2.qcow2', '3M');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,lazy_refcounts=on,compression_type=zstd,refcount_bits=8', 'features.qcow2', '5M');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'dirty.qcow2', '1M');
  const dirty = readFileSync(dir.file('dirty.qcow2'));
  dirty.writeUInt8(dirty.readUInt8(79) | 1, 79); // incompatible feature bit 0: dirty
  writeFileSync(dir.file('dirty.qcow2'), dirty);
  await sh('qemu-img', 'convert', '-c', '-O', 'qcow2', 'base.qcow2', 'compressed.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'snap.qcow2', '2M');
  await sh('qemu-img', 'snapshot', '-c', 'first', 'snap.qcow2');
});
afterAll(() => dir?.remove());

describe('info prints what qemu-img info prints', () => {
  const images = ['disk.raw', 'odd.raw', 'empty.raw', 'base.qcow2', 'top.qcow2', 'over-raw.qcow2', 'sub/over.qcow2', 'v2.qcow2', 'features.qcow2', 'dirty.qcow2', 'compressed.qcow2'];

  it('--output=json: the same keys, in the same order, with the same values', async () => {
    for (const image of images) {
      const { ours } = await same('info', '--output=json', image);
      const parsed = JSON.parse(ours.stdout) as Record<string, unknown>;
      expect(parsed).not.toHaveProperty('backing-image');
    }
    const raw = JSON.parse((await dm('info', '--output=json', 'disk.raw')).stdout) as Record<string, unknown>;
    expect(Object.keys(raw)).toEqual(['virtual-size', 'filename', 'format', 'actual-size', 'dirty-flag']);
  });

  it('--backing-chain --output=json: an array, one object per image, top first', async () => {
    for (const image of images) await same('info', '--backing-chain', '--output=json', image);
    const chain = JSON.parse((await dm('info', '--backing-chain', '--output=json', 'top.qcow2')).stdout) as Array<Record<string, unknown>>;
    expect(chain.map((i) => i.filename)).toEqual(['top.qcow2', 'mid.qcow2', 'base.qcow2']);
    // Backing files are joined to the name of the image that names them, as qemu-img joins them.
    const sub = JSON.parse((await dm('info', '--backing-chain', '--output=json', 'sub/over.qcow2')).stdout) as Array<Record<string, unknown>>;
    expect(sub.map((i) => i.filename)).toEqual(['sub/over.qcow2', 'sub/../base.qcow2']);
    await same('info', '--backing-chain', '--output=json', dir.file('sub/over.qcow2'));
    await same('info', '--backing-chain', '--output=json', './sub/../sub/over.qcow2');
  });

  it('human output: qemu-img lines (and, without --backing-chain, one more naming the chain)', async () => {
    for (const image of images) {
      await same('info', '--backing-chain', image);
      const [ours, theirs] = await Promise.all([dm('info', image), qemu('info', image)]);
      expect(ours.code).toBe(0);
      expect(ours.stdout.startsWith(theirs.stdout.trimEnd()), image).toBe(true);
      const extra = ours.stdout.slice(theirs.stdout.trimEnd().length).trim();
      expect(extra, image).toMatch(/^(backing chain: .* -> .*)?$/);
    }
    const raw = await dm('info', 'disk.raw');
    expect(raw.stdout).toBe(`image: disk.raw\nfile format: raw\nvirtual size: 1 MiB (1048576 bytes)\ndisk size: ${(await qemu('info', 'disk.raw')).stdout.match(/disk size: (.*)/)![1]}\n`);
  });

  it('snapshots: the keys diskmirror reads, with qemu-img values', async () => {
    const [ours, theirs] = await Promise.all([dm('info', '--output=json', 'snap.qcow2'), qemu('info', '--output=json', 'snap.qcow2')]);
    const a = JSON.parse(ours.stdout) as { snapshots: Array<Record<string, unknown>> };
    const b = JSON.parse(theirs.stdout) as { snapshots: Array<Record<string, unknown>> };
    expect(Object.keys(a)).toEqual(Object.keys(b));
    expect(a.snapshots).toHaveLength(1);
    const unread = ['icount', 'vm-clock-nsec', 'date-nsec', 'vm-clock-sec'];
    const known = Object.fromEntries(Object.entries(b.snapshots[0]!).filter(([k]) => !unread.includes(k)));
    expect(a.snapshots[0]).toEqual(known);
    expect(Object.keys(a.snapshots[0]!)).toEqual(Object.keys(known));
    expect({ ...a, snapshots: undefined }).toEqual({ ...b, snapshots: undefined });
  });
});

describe('check prints what qemu-img check prints', () => {
  beforeAll(async () => {
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'clean.qcow2', '4M');
    await sh('qemu-io', '-c', 'write -P 0x11 0 128k', 'clean.qcow2');
    for (const [file, changes] of [
      ['leaky.qcow2', [[0, 2]]], // the header counted twice
      ['corrupt.qcow2', [[4, 0]]], // a data cluster in use counted as free
      ['both.qcow2', [[0, 2], [4, 0]]],
    ] as const) {
      writeFileSync(dir.file(file), readFileSync(dir.file('clean.qcow2')));
      for (const [index, value] of changes) setRefcount(file, index, value);
    }
  });

  it('--output=json and human: the same keys, values, lines and exit codes (0 clean, 3 leaks, 2 corruptions)', async () => {
    const expected: Record<string, number> = { 'clean.qcow2': 0, 'base.qcow2': 0, 'v2.qcow2': 0, 'compressed.qcow2': 0, 'features.qcow2': 0, 'leaky.qcow2': 3, 'corrupt.qcow2': 2, 'both.qcow2': 2 };
    for (const [image, code] of Object.entries(expected)) {
      const json = await same('check', '--output=json', image);
      expect(json.ours.code, image).toBe(code);
      const parsed = JSON.parse(json.ours.stdout) as Record<string, unknown>;
      expect(parsed.filename).toBe(image);
      expect(parsed['check-errors']).toBe(0);
      await same('check', image);
    }
    const both = JSON.parse((await dm('check', '--output=json', 'both.qcow2')).stdout) as Record<string, unknown>;
    expect(Object.keys(both)).toEqual(['image-end-offset', 'total-clusters', 'corruptions', 'check-errors', 'leaks', 'allocated-clusters', 'filename', 'format']);
    // 2 of 64 clusters: printf rounds 3.125 to even.
    expect((await dm('check', 'both.qcow2')).stdout).toMatch(/^2\/64 = 3\.12% allocated, 0\.00% fragmented, 0\.00% compressed clusters$/m);
  });

  it('a raw image: "This image format does not support checks", exit 63, nothing on stdout', async () => {
    for (const args of [['check', 'disk.raw'], ['check', '--output=json', 'disk.raw'], ['check', '-f', 'raw', 'odd.raw']]) {
      const { ours, theirs } = await same(...args);
      expect(ours.code).toBe(63);
      expect(ours.stdout).toBe('');
      expect(ours.stderr.replace(/^diskmirror check: /, '')).toBe(theirs.stderr.replace(/^qemu-img: /, ''));
    }
  });
});

describe('a backing chain 300 images deep', () => {
  const DEPTH = 300;
  const layer = (i: number) => `deep/l${String(i).padStart(3, '0')}.qcow2`;
  const top = layer(DEPTH);

  beforeAll(async () => {
    mkdirSync(dir.file('deep'));
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', layer(0), '1M');
    // -u: qemu-img does not open the backing file, so the layers can be made in any order.
    const make = (i: number) => sh('qemu-img', 'create', '-q', '-u', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', layer(i - 1).slice('deep/'.length), '-F', 'qcow2', layer(i), '1M');
    for (let i = 1; i <= DEPTH; i += 4) await Promise.all([0, 1, 2, 3].filter((k) => i + k <= DEPTH).map((k) => make(i + k)));
    await sh('qemu-io', '-c', 'write -P 0x5a 0 64k', layer(0));
    await sh('qemu-io', '-c', 'write -P 0x6b 128k 64k', layer(DEPTH / 2));
    await sh('qemu-io', '-c', 'write -P 0x7c 192k 4k', '-c', 'write -z 0 4k', top);
  }, 120_000);

  it('info --backing-chain lists every image, as qemu-img does', async () => {
    const { ours } = await same('info', '--backing-chain', '--output=json', top);
    expect(JSON.parse(ours.stdout)).toHaveLength(DEPTH + 1);
    await same('info', '--backing-chain', top);
    await same('info', '--output=json', top);
  }, 60_000);

  it('map and convert agree with qemu-img', async () => {
    await same('map', '--output=json', top);
    const [ours, theirs] = await Promise.all([dm('convert', '-O', 'raw', top, 'deep-ours.raw'), qemu('convert', '-O', 'raw', top, 'deep-qemu.raw')]);
    expect(ours.code, ours.stderr).toBe(0);
    expect(theirs.code).toBe(0);
    expect(Buffer.compare(readFileSync(dir.file('deep-ours.raw')), readFileSync(dir.file('deep-qemu.raw')))).toBe(0);
    expect((await qemu('compare', top, 'deep-ours.raw')).code).toBe(0);
    expect((await dm('compare', top, 'deep-qemu.raw')).code).toBe(0);
    expect((await dm('check', top)).code).toBe(0);
  }, 60_000);
});
