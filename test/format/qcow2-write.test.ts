/**
 * qemu-img reads what diskmirror writes: images created with each option
 * and changed by seeded writes, zero writes and discards (across L2-table
 * and refcount-block boundaries, growing the refcount table) pass
 * `qemu-img check` and compare equal to the bytes written.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { createImageFile, openImageFile } from '../../src/cli/node-images.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { checkImage } from '../../src/format/qcow2/check.js';
import { createQcow2, type Qcow2CreateOptions } from '../../src/format/qcow2/create.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { requireQemu, qemuCheck, qemuCompare, qemuImg, qemuIo, run, tempDir } from '../helpers/qemu.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, mixedData, readAll, verifyMap } from './qcow2-images.js';

const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext = 'qcow2') => dir.file(`w${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  dir = tempDir('diskmirror-write-');
});
afterAll(() => dir?.remove());

type Op = { kind: 'write' | 'zero' | 'zero-unmap' | 'discard'; offset: number; bytes: number; seed: number };

function randomPlan(size: number, count: number, seed: number, maxBytes: number, align = 1): Op[] {
  const next = rng(seed);
  const kinds: Op['kind'][] = ['write', 'write', 'write', 'zero', 'zero-unmap', 'discard'];
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const bytes = Math.max(align, Math.floor((1 + randInt(next, maxBytes)) / align) * align);
    const offset = Math.floor(randInt(next, size - bytes) / align) * align;
    ops.push({ kind: kinds[randInt(next, kinds.length)]!, offset, bytes, seed: seed * 1000 + i });
  }
  return ops;
}

/**
 * Applies ops to the image and to a model of its content. A discard may
 * leave the old bytes or zeroes: the model learns which from the image.
 */
async function apply(image: ImageFormat, model: Uint8Array, ops: Op[], concurrent = false): Promise<void> {
  const one = async (op: Op) => {
    switch (op.kind) {
      case 'write': {
        const data = mixedData(op.bytes, op.seed);
        await image.write(op.offset, data);
        model.set(data, op.offset);
        break;
      }
      case 'zero':
      case 'zero-unmap':
        await image.writeZeroes(op.offset, op.bytes, { unmap: op.kind === 'zero-unmap' });
        model.fill(0, op.offset, op.offset + op.bytes);
        break;
      case 'discard': {
        await image.discard!(op.offset, op.bytes);
        const now = new Uint8Array(op.bytes);
        await image.read(op.offset, now);
        model.set(now, op.offset);
        break;
      }
    }
  };
  if (!concurrent) {
    for (const op of ops) await one(op);
    return;
  }
  // Concurrent, but never overlapping (as the mirror issues them).
  for (let i = 0; i < ops.length; ) {
    const batch: Op[] = [];
    while (i < ops.length && batch.length < 16 && !batch.some((b) => b.offset < ops[i]!.offset + ops[i]!.bytes && ops[i]!.offset < b.offset + b.bytes)) {
      batch.push(ops[i++]!);
    }
    await Promise.all(batch.map(one));
  }
}

/** qemu-img check passes (exit 0), compares equal to the model, and our own check and read agree. */
async function verify(path: string, model: Uint8Array): Promise<void> {
  const check = await qemuCheck(path);
  expect(check.stderr, 'qemu-img check').toBe('');
  expect(check.code, 'qemu-img check exit').toBe(0);
  const raw = name('raw');
  writeFileSync(raw, model);
  const cmp = await qemuCompare(path, raw);
  expect(cmp.stdout + cmp.stderr, 'qemu-img compare').toMatch(/Images are identical/);
  const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
  try {
    const ours = await readAll(image, 3);
    expect(findDiff(ours, model)).toBe(-1);
    const result = await checkImage(image);
    expect(result.messages).toEqual([]);
    await verifyMap(image, path);
  } finally {
    await image.close();
  }
}

async function createAndRun(options: Omit<Qcow2CreateOptions, 'size'>, size: number, ops: Op[], concurrent = false): Promise<string> {
  const path = name();
  const image = await createImageFile(path, { format: 'qcow2', size, ...options });
  const model = new Uint8Array(size);
  try {
    await apply(image, model, ops, concurrent);
  } finally {
    await image.close();
  }
  await verify(path, model);
  return path;
}

describe('qcow2 write: each create option', () => {
  const cases: Array<[string, Omit<Qcow2CreateOptions, 'size'>]> = [
    ['defaults (compat 1.1, 64 KiB)', {}],
    ['compat 0.10', { compat: '0.10' }],
    ['512-byte clusters', { clusterSize: 512 }],
    ['2 MiB clusters', { clusterSize: 2 * MiB }],
    ['extended L2', { extendedL2: true }],
    ['extended L2, 16 KiB clusters', { extendedL2: true, clusterSize: 16384 }],
    ['zstd compression type', { compressionType: 'zstd' }],
    ['lazy refcounts', { lazyRefcounts: true }],
    ['preallocation=metadata', { preallocation: 'metadata' }],
    ['compat 0.10, preallocation=metadata', { compat: '0.10', preallocation: 'metadata', clusterSize: 4096 }],
  ];
  for (const [label, options] of cases) {
    it(label, async () => {
      await createAndRun(options, 12 * MiB + 512 * 5, randomPlan(12 * MiB, 120, 3, 700 << 10, 512));
    });
  }
  for (const bits of [1, 2, 4, 8, 32, 64]) {
    it(`refcount_bits=${bits}`, async () => {
      await createAndRun({ refcountBits: bits, clusterSize: 4096 }, 6 * MiB, randomPlan(6 * MiB, 80, bits, 300 << 10, 512));
    });
  }
  it('unaligned writes (byte granularity)', async () => {
    await createAndRun({ clusterSize: 4096 }, 3 * MiB, randomPlan(3 * MiB, 150, 9, 20000, 1));
    await createAndRun({ extendedL2: true, clusterSize: 32768 }, 3 * MiB, randomPlan(3 * MiB, 150, 10, 20000, 1));
  });
});

describe('qcow2 write: growth and boundaries', () => {
  it('grows the refcount table many times (512-byte clusters, 64-bit refcounts)', async () => {
    // A refcount block counts 64 clusters and a table cluster names 64 blocks: 2 MiB of image each.
    const size = 8 * MiB;
    const path = await createAndRun({ clusterSize: 512, refcountBits: 64 }, size, [{ kind: 'write', offset: 0, bytes: size, seed: 5 }]);
    const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
    try {
      expect(image.header.refcountTableClusters).toBeGreaterThan(2);
    } finally {
      await image.close();
    }
  });

  it('the open image knows where its grown refcount table is: a check in the same session is clean', async () => {
    const size = 6 * MiB;
    const path = name();
    const image = (await createImageFile(path, { format: 'qcow2', size, clusterSize: 512, refcountBits: 64 })) as Qcow2Image;
    try {
      const before = image.header.refcountTableOffset;
      await image.write(0, mixedData(size, 21));
      expect(image.header.refcountTableOffset).not.toBe(before);
      const result = await checkImage(image);
      expect(result.corruptions).toBe(0);
      expect(result.leaks).toBe(0);
      expect(result.checkErrors).toBe(0);
    } finally {
      await image.close();
    }
    expect(await qemuCheck(path)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 });
  });

  it('writes across L2-table and refcount-block boundaries, in every order', async () => {
    const size = 4 * MiB;
    // 512-byte clusters: an L2 table maps 32 KiB, a 16-bit refcount block counts 256 clusters.
    const ops = randomPlan(size, 400, 12, 80 << 10, 512);
    await createAndRun({ clusterSize: 512 }, size, ops);
  });

  it('concurrent writes (as the mirror issues them)', async () => {
    const size = 16 * MiB;
    const ops = randomPlan(size, 300, 13, 1 << 20, 4096);
    await createAndRun({ clusterSize: 65536 }, size, ops, true);
    await createAndRun({ clusterSize: 2 * MiB }, size, randomPlan(size, 200, 14, 256 << 10, 4096), true);
  });

  it('writes into an image qemu made, and a chain: copy-on-write from the backing file', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '4M');
    await qemuIo(base, ['write -P 0x11 0 4M']);
    const top = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=64k', '-b', base, '-F', 'qcow2', top);
    const model = new Uint8Array(4 * MiB).fill(0x11);
    const image = await openImageFile(top);
    try {
      await apply(image, model, randomPlan(4 * MiB, 60, 15, 100 << 10, 1));
    } finally {
      await image.close();
    }
    await verify(top, model);
  });

  it('extended L2 over a backing file: partial subclusters copy from it', async () => {
    const base = name('raw');
    const baseData = mixedData(2 * MiB, 77);
    writeFileSync(base, baseData);
    const top = name();
    const file = await NodeFileDevice.open(top, { create: true });
    await createQcow2(file, { size: 2 * MiB, extendedL2: true, backingFile: base, backingFormat: 'raw' });
    await file.close();
    const model = baseData.slice();
    const image = await openImageFile(top);
    try {
      await apply(image, model, randomPlan(2 * MiB, 80, 16, 40000, 1));
    } finally {
      await image.close();
    }
    await verify(top, model);
  });
});

describe('qcow2 write: deallocate (full discard)', () => {
  it('ranges read from the backing image again, aligned or not, with and without subclusters', async () => {
    const base = name('raw');
    const baseData = mixedData(4 * MiB, 81);
    writeFileSync(base, baseData);
    for (const options of [{}, { extendedL2: true, clusterSize: 32768 }, { clusterSize: 4096, compat: '0.10' as const }]) {
      const top = name();
      const file = await NodeFileDevice.open(top, { create: true });
      await createQcow2(file, { size: 4 * MiB, backingFile: base, backingFormat: 'raw', ...options });
      await file.close();
      const image = (await openImageFile(top)) as Qcow2Image;
      const model = baseData.slice();
      try {
        await apply(image, model, randomPlan(4 * MiB, 40, 82, 300 << 10, 1).map((op) => ({ ...op, kind: 'write' as const })));
        const next = rng(83);
        for (let i = 0; i < 30; i++) {
          const bytes = 1 + randInt(next, 400 << 10);
          const offset = randInt(next, 4 * MiB - bytes);
          await image.deallocate(offset, bytes);
          model.set(baseData.subarray(offset, offset + bytes), offset);
        }
      } finally {
        await image.close();
      }
      await verify(top, model);
    }
  });
});

describe('qcow2 write: snapshots, lazy refcounts, compressed writes', () => {
  it('copies clusters and L2 tables shared with an internal snapshot; the snapshot keeps its data', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k', path, '2M');
    await qemuIo(path, ['write -P 0x21 0 2M']);
    await qemuImg('snapshot', '-c', 'before', path);
    const model = new Uint8Array(2 * MiB).fill(0x21);
    const image = await openImageFile(path);
    try {
      await apply(image, model, randomPlan(2 * MiB, 60, 17, 100 << 10, 1));
    } finally {
      await image.close();
    }
    await verify(path, model);
    // Going back to the snapshot gives the old bytes.
    await qemuImg('snapshot', '-a', 'before', path);
    const raw = name('raw');
    writeFileSync(raw, new Uint8Array(2 * MiB).fill(0x21));
    expect((await qemuCompare(path, raw)).code).toBe(0);
    expect((await qemuCheck(path)).code).toBe(0);
  });

  it('lazy refcounts: the dirty bit is set while writing and cleared on close', async () => {
    const path = name();
    const image = (await createImageFile(path, { format: 'qcow2', size: 4 * MiB, lazyRefcounts: true })) as Qcow2Image;
    await image.write(0, new Uint8Array(128 << 10).fill(7));
    expect((await qemuImg('info', '--force-share', path)).includes('corrupt: false')).toBe(true);
    const dirty = await run('qemu-img', ['info', '--force-share', '--output=json', path]);
    expect(JSON.parse(dirty.stdout)['dirty-flag']).toBe(true);
    await image.close();
    const clean = await run('qemu-img', ['info', '--output=json', path]);
    expect(JSON.parse(clean.stdout)['dirty-flag']).toBe(false);
    expect((await qemuCheck(path)).code).toBe(0);
  });

  it('a dirty image (left by a crash) is repaired on a writable open', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=4k', path, '4M');
    await run('qemu-io', ['-c', 'write -P 0x31 0 1M', '-c', 'write -P 0x32 2M 1M', '-c', 'abort', path]);
    expect(JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout)['dirty-flag']).toBe(true);
    const image = await openImageFile(path);
    await image.write(3 * MiB, new Uint8Array(4096).fill(0x33));
    await image.close();
    const model = new Uint8Array(4 * MiB);
    model.fill(0x31, 0, MiB);
    model.fill(0x32, 2 * MiB, 3 * MiB);
    model.fill(0x33, 3 * MiB, 3 * MiB + 4096);
    await verify(path, model);
  });

  it('compressed writes (zlib), as convert -c', async () => {
    const path = name();
    const size = 4 * MiB;
    const image = (await createImageFile(path, { format: 'qcow2', size, compress: true })) as Qcow2Image;
    const model = mixedData(size, 91);
    try {
      await image.write(0, model);
      await image.write(100, model.subarray(100, 5000)); // partial: stored plain
    } finally {
      await image.close();
    }
    const info = await run('qemu-img', ['check', path]);
    expect(info.stdout).toMatch(/compressed clusters/);
    await verify(path, model);
  });

  it('compressed writes with 512-byte and 2 MiB clusters', async () => {
    for (const clusterSize of [512, 2 * MiB]) {
      const path = name();
      const size = 4 * MiB;
      const image = await createImageFile(path, { format: 'qcow2', size, clusterSize, compress: true });
      const model = mixedData(size, 92);
      try {
        await image.write(0, model);
      } finally {
        await image.close();
      }
      await verify(path, model);
    }
  });

  it('a compressed cluster freed by a discard is never packed into again once it holds other data', async () => {
    // Compressed cluster 0, discarded (its host cluster freed); a plain write takes that host cluster;
    // the next compressed write must not pack into it.
    const path = name();
    const cs = 64 << 10;
    const image = (await createImageFile(path, { format: 'qcow2', size: MiB, compress: true })) as Qcow2Image;
    const model = new Uint8Array(MiB);
    const compressible = (seed: number) => new Uint8Array(cs).map((_, i) => (i % 7 === 0 ? seed : 0));
    try {
      await image.write(0, compressible(1));
      await image.discard(0, cs);
      image.compress = false;
      const plain = mixedData(cs, 93);
      await image.write(cs, plain);
      model.set(plain, cs);
      image.compress = true;
      const packed = compressible(3);
      await image.write(2 * cs, packed);
      model.set(packed, 2 * cs);
      const back = new Uint8Array(cs);
      await image.read(cs, back);
      expect(findDiff(back, plain)).toBe(-1);
    } finally {
      await image.close();
    }
    const check = await qemuCheck(path);
    expect(check.code, check.stderr).toBe(0);
    await verify(path, model);
  });

  it('compressed writes are refused for zstd images', async () => {
    await expect(createImageFile(name(), { format: 'qcow2', size: MiB, compressionType: 'zstd', compress: true })).rejects.toThrow(/zlib/);
  });
});

describe('qcow2 write: errors', () => {
  it('a read-only image refuses writes', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '1M');
    const image = await openImageFile(path, { readOnly: true });
    try {
      await expect(image.write(0, new Uint8Array(512))).rejects.toThrow(/EROFS|read-only/);
    } finally {
      await image.close();
    }
  });

  it('a write past the virtual size is refused', async () => {
    const image = await createImageFile(name(), { format: 'qcow2', size: MiB });
    try {
      await expect(image.write(MiB - 100, new Uint8Array(512))).rejects.toThrow(/past the device size/);
    } finally {
      await image.close();
    }
  });

  it('refcounts that call metadata free: the write is refused and the image marked corrupt (QEMU\'s overlap check)', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '4M');
    await qemuIo(path, ['write -P 0x11 0 64k']);
    // Cluster 3 holds the L1 table; say it is free.
    const bytes = readFileSync(path);
    const block = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(48))));
    expect(Number(bytes.readBigUInt64BE(40))).toBe(3 * 65536);
    bytes.writeUInt16BE(0, block + 3 * 2);
    writeFileSync(path, bytes);
    const image = await openImageFile(path);
    await expect(image.write(MiB, new Uint8Array(65536).fill(1))).rejects.toThrow(/corrupt.*active L1 table/);
    await image.close().catch(() => {});
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout);
    expect(info['format-specific'].data.corrupt).toBe(true);
    await expect(openImageFile(path)).rejects.toThrow(/marked corrupt/);
  });

  it('create options are checked as qemu-img checks them', async () => {
    await expect(createImageFile(name(), { format: 'qcow2', size: MiB, compat: '0.10', lazyRefcounts: true })).rejects.toThrow(/Lazy refcounts/);
    await expect(createImageFile(name(), { format: 'qcow2', size: MiB, clusterSize: 3000 })).rejects.toThrow(/Cluster size/);
    await expect(createImageFile(name(), { format: 'qcow2', size: MiB, extendedL2: true, clusterSize: 4096 })).rejects.toThrow(/16384/);
    await expect(createImageFile(name(), { format: 'qcow2', size: 1000 })).rejects.toThrow(/multiple of 512/);
    await expect(createImageFile(name(), { format: 'qcow2', size: MiB, refcountBits: 3 })).rejects.toThrow(/power of two/);
  });
});
