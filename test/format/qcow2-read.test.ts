/**
 * Reading images made by qemu-img and qemu-io, one feature each: every byte
 * equals `qemu-img convert -O raw`, and the map agrees with `qemu-img map`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import { FormatError } from '../../src/format/image-format.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { createQcow2 } from '../../src/format/qcow2/create.js';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { requireQemu, qemuImg, qemuIo, run, tempDir } from '../helpers/qemu.js';
import { qemuIoBatched, randomOps, verifyAgainstQemu, verifyConvert, verifyMap, writeMixed } from './qcow2-images.js';

const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext = 'qcow2') => dir.file(`img${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  dir = tempDir('diskmirror-read-');
});
afterAll(() => dir?.remove());

/** A qcow2 image converted from mixed data, then changed by seeded writes, zero writes and discards. */
async function featureImage(options: string, bytes: number, seed: number, ops = 40): Promise<string> {
  const raw = name('raw');
  writeMixed(raw, bytes, seed);
  const path = name();
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', ...(options ? ['-o', options] : []), raw, path);
  await qemuIoBatched(path, randomOps(bytes, ops, seed + 1));
  return path;
}

describe('qcow2 read: versions and cluster sizes', () => {
  for (const [label, options] of [
    ['compat 1.1, 64 KiB clusters', ''],
    ['compat 0.10', 'compat=0.10'],
    ['512-byte clusters', 'cluster_size=512'],
    ['4 KiB clusters', 'cluster_size=4096'],
    ['2 MiB clusters', 'cluster_size=2M'],
    ['compat 0.10 with 512-byte clusters', 'compat=0.10,cluster_size=512'],
  ] as const) {
    it(label, async () => {
      const path = await featureImage(options, 6 * MiB + 512 * 3, 11);
      await verifyAgainstQemu(path, name('raw'));
    });
  }
});

describe('qcow2 read: refcount widths', () => {
  for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
    it(`refcount_bits=${bits}`, async () => {
      const path = await featureImage(`refcount_bits=${bits},cluster_size=4096`, 3 * MiB, bits);
      await verifyAgainstQemu(path, name('raw'));
      const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
      try {
        const refcounts = await image.refcounts();
        expect(refcounts.bits).toBe(bits);
        expect(await refcounts.get(0)).toBe(1); // the header cluster
      } finally {
        await image.close();
      }
    });
  }
});

describe('qcow2 read: cluster kinds', () => {
  it('zero clusters (plain and allocated) and discards', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '8M');
    await qemuIo(path, [
      'write -P 0x11 0 4M',
      'write -z 64k 128k', // zero, keeps the clusters (zero-alloc)
      'write -z -u 1M 256k', // zero, unmapped (zero-plain)
      'discard 2M 512k',
      'write -P 0x22 2304k 4k',
      'write -z 6M 1M', // zero over unallocated
    ]);
    await verifyAgainstQemu(path, name('raw'));
  });

  it('compressed clusters, zlib (convert -c and write -c)', async () => {
    const raw = name('raw');
    writeMixed(raw, 5 * MiB, 21);
    const path = name();
    await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, path);
    await qemuIo(path, ['discard 4M 64k', 'write -c -P 0x5a 4M 64k', 'write -P 0x33 100k 10k', 'write -z 1M 64k']);
    await verifyAgainstQemu(path, name('raw'));
  });

  it('compressed clusters, zstd', async () => {
    const raw = name('raw');
    writeMixed(raw, 5 * MiB, 22);
    const path = name();
    await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, path);
    await qemuIo(path, ['discard 4M 64k', 'write -c -P 0x5a 4M 64k', 'write -P 0x33 100k 10k']);
    await verifyAgainstQemu(path, name('raw'));
  });

  it('compressed clusters with 512-byte and 2 MiB clusters', async () => {
    for (const cs of ['512', '2M']) {
      const raw = name('raw');
      writeMixed(raw, 4 * MiB, 23);
      const path = name();
      await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${cs}`, raw, path);
      await verifyAgainstQemu(path, name('raw'));
    }
  });

  it('extended L2 entries (subclusters)', async () => {
    for (const cs of ['64k', '16k', '2M']) {
      const path = name();
      await qemuImg('create', '-f', 'qcow2', '-o', `extended_l2=on,cluster_size=${cs}`, path, '8M');
      await qemuIo(path, [
        'write -P 0x41 0 3k',
        'write -P 0x42 10k 1k',
        'write -P 0x43 1M 700k',
        'write -z 1100k 8k',
        'write -z -u 1200k 64k',
        'discard 1500k 128k',
        'write -c -P 0x44 4M 2M',
        'write -P 0x45 7M 4k',
      ]);
      await verifyAgainstQemu(path, name('raw'));
    }
  });

  it('extended L2 over a backing file: unallocated subclusters read from it', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '4M');
    await qemuIo(base, ['write -P 0x61 0 4M']);
    const top = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', base, '-F', 'qcow2', top);
    await qemuIo(top, ['write -P 0x62 3k 5k', 'write -z 70k 6k', 'discard 1M 64k', 'write -P 0x63 2M 1k']);
    await verifyAgainstQemu(top, name('raw'));
  });
});

describe('qcow2 read: backing chains', () => {
  it('a chain four deep (qcow2 over qcow2 over qcow2 over raw)', async () => {
    const base = name('raw');
    writeMixed(base, 4 * MiB, 31);
    const l1 = name();
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'raw', l1, '5M');
    await qemuIo(l1, ['write -P 0x71 1M 1M', 'write -z 3M 64k']);
    const l2 = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', l1.split('/').pop()!, '-F', 'qcow2', l2);
    await qemuIo(l2, ['write -P 0x72 1536k 4k', 'discard 0 64k', 'write -P 0x73 4700k 100k']);
    const l3 = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', '-b', l2, '-F', 'qcow2', l3, '6M');
    await qemuIo(l3, ['write -P 0x74 5M 512k', 'write -P 0x75 2M 4k']);
    await verifyAgainstQemu(l3, name('raw'));
    const image = (await openImageFile(l3, { readOnly: true })) as Qcow2Image;
    try {
      const info = await image.info();
      expect(info.backing?.backing?.backing?.format).toBe('raw');
    } finally {
      await image.close();
    }
  });

  it('a qcow2 image over a raw image', async () => {
    const base = name('raw');
    writeMixed(base, 3 * MiB, 32);
    const top = name();
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'raw', top);
    await qemuIo(top, ['write -P 0x81 100k 200k', 'write -z 2M 64k']);
    await verifyAgainstQemu(top, name('raw'));
  });

  it('the backing format is probed when the header does not name it', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '2M');
    await qemuIo(base, ['write -P 0x91 0 1M']);
    const top = name();
    // qemu-img 7.2 insists on a backing format; diskmirror can leave it out.
    const file = await NodeFileDevice.open(top, { create: true });
    await createQcow2(file, { size: 2 * MiB, backingFile: base });
    await file.close();
    expect((await qemuImg('info', top)).includes('backing file format')).toBe(false);
    await verifyAgainstQemu(top, name('raw'));
    const image = (await openImageFile(top, { readOnly: true })) as Qcow2Image;
    try {
      expect(image.header.backingFormat).toBeUndefined();
      expect(image.backing?.format).toBe('qcow2');
    } finally {
      await image.close();
    }
  });

  it('a missing backing file is a clear FormatError', async () => {
    const base = name();
    await qemuImg('create', '-f', 'qcow2', base, '1M');
    const top = name();
    await qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await run('rm', [base]);
    await expect(openImageFile(top, { readOnly: true })).rejects.toThrow(FormatError);
    await expect(openImageFile(top, { readOnly: true })).rejects.toThrow(/Could not open backing file/);
  });

  it('a loop in the chain is a clear FormatError', async () => {
    const a = name();
    const b = name();
    await qemuImg('create', '-f', 'qcow2', a, '1M');
    await qemuImg('create', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b);
    await qemuImg('rebase', '-u', '-b', b, '-F', 'qcow2', a); // a -> b -> a
    await expect(openImageFile(b, { readOnly: true })).rejects.toThrow(/loop/);
  });
});

describe('qcow2 read: snapshots, lazy refcounts, preallocation, size, fragmentation', () => {
  it('internal snapshots: the active state is read', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', path, '4M');
    await qemuIo(path, ['write -P 0xa1 0 2M']);
    await qemuImg('snapshot', '-c', 'one', path);
    await qemuIo(path, ['write -P 0xa2 1M 64k', 'discard 0 128k']);
    await qemuImg('snapshot', '-c', 'two', path);
    await qemuIo(path, ['write -P 0xa3 3M 4k']);
    await verifyAgainstQemu(path, name('raw'));
    const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
    try {
      expect((await image.snapshots()).snapshots.map((s) => s.name)).toEqual(['one', 'two']);
    } finally {
      await image.close();
    }
  });

  it('lazy refcounts, closed cleanly and left dirty', async () => {
    const path = name();
    await qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '4M');
    await qemuIo(path, ['write -P 0xb1 0 1M']);
    await verifyAgainstQemu(path, name('raw'));
    // abort leaves the dirty bit set and the refcounts behind
    await run('qemu-io', ['-c', 'write -P 0xb2 2M 1M', '-c', 'abort', path]);
    const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
    try {
      expect((await image.info()).details?.dirty).toBe(true);
    } finally {
      await image.close();
    }
    await verifyAgainstQemu(path, name('raw'));
  });

  for (const prealloc of ['metadata', 'falloc', 'full']) {
    it(`preallocation=${prealloc}`, async () => {
      const path = name();
      await qemuImg('create', '-f', 'qcow2', '-o', `preallocation=${prealloc}`, path, '3M');
      await qemuIo(path, ['write -P 0xc1 64k 64k', 'write -z 1M 128k']);
      await verifyAgainstQemu(path, name('raw'));
    });
  }

  it('a virtual size over 2 TiB', async () => {
    const path = name();
    const size = 3 * 2 ** 40;
    await qemuImg('create', '-f', 'qcow2', path, String(size));
    await qemuIo(path, ['write -P 0xd1 0 64k', `write -P 0xd2 ${2 ** 41 + 12345 * 512} 100k`, `write -P 0xd3 ${size - 65536} 64k`, `write -z ${2 ** 41} 64k`]);
    const image = (await openImageFile(path, { readOnly: true })) as Qcow2Image;
    try {
      expect(image.size).toBe(size);
      await verifyMap(image, path);
      const probe = async (offset: number, bytes: number) => {
        const ours = new Uint8Array(bytes);
        await image.read(offset, ours);
        const out = await run('qemu-io', ['-c', `read -v ${offset} ${bytes}`, path]);
        return { ours, theirs: out.stdout };
      };
      const { ours } = await probe(size - 65536, 65536);
      expect(ours.every((b) => b === 0xd3)).toBe(true);
      const mid = new Uint8Array(100 << 10);
      await image.read(2 ** 41 + 12345 * 512, mid);
      expect(mid.every((b) => b === 0xd2)).toBe(true);
      const hole = new Uint8Array(1 << 20);
      await image.read(2 ** 40, hole);
      expect(hole.every((b) => b === 0)).toBe(true);
    } finally {
      await image.close();
    }
    await verifyConvert(path, name('raw'));
  });

  it('a fragmented image from many random writes', async () => {
    const path = name();
    const size = 16 * MiB;
    await qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k', path, String(size));
    await qemuIoBatched(path, randomOps(size, 600, 41, 64 << 10, ['write', 'write', 'write', 'zero', 'discard', 'zero-unmap']));
    await verifyAgainstQemu(path, name('raw'));
  });
});
