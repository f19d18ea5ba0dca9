/**
 * Raw images over sparse files: holes are zero extents (SEEK_DATA /
 * SEEK_HOLE), never stale once the image writes there, and zeroes are not
 * written again over a hole.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/block/block-device.js';
import { fsExt } from '../../src/block/fs-ext.js';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { RawImage } from '../../src/format/raw.js';

const MiB = 1 << 20;
let dir: string;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-holes-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An 8 MiB file with data at [1 MiB, 2 MiB) only. */
function sparseFile(): string {
  const path = join(dir, `f${n++}.raw`);
  writeFileSync(path, '');
  truncateSync(path, 8 * MiB);
  const fd = openSync(path, 'r+');
  writeSync(fd, new Uint8Array(MiB).fill(0xab), 0, MiB, MiB);
  closeSync(fd);
  return path;
}

/** A device whose writes wait for `gate` before they reach the file. */
class SlowWrites implements BlockDevice {
  gate: Promise<void> = Promise.resolve();
  constructor(readonly inner: NodeFileDevice) {}
  get size() {
    return this.inner.size;
  }
  get readOnly() {
    return this.inner.readOnly;
  }
  read(offset: number, into: Uint8Array) {
    return this.inner.read(offset, into);
  }
  async write(offset: number, data: Uint8Array) {
    await this.gate;
    return this.inner.write(offset, data);
  }
  flush() {
    return this.inner.flush();
  }
  close() {
    return this.inner.close();
  }
  resize(bytes: number) {
    return this.inner.resize(bytes);
  }
  allocation(offset: number, bytes: number) {
    return this.inner.allocation(offset, bytes);
  }
}

describe('raw holes', () => {
  it('fs-ext is there (its native build is part of npm install)', () => {
    expect(fsExt()).not.toBeNull();
  });

  it('block status says zero for holes and data for data, extent by extent', async () => {
    const image = new RawImage(await NodeFileDevice.open(sparseFile(), { readOnly: true }));
    expect(await image.blockStatus(0, 8 * MiB)).toMatchObject({ offset: 0, bytes: MiB, kind: 'zero' });
    expect(await image.blockStatus(MiB, 8 * MiB)).toMatchObject({ bytes: MiB, kind: 'data' });
    expect(await image.blockStatus(MiB + 4096, 4096)).toMatchObject({ bytes: 4096, kind: 'data' });
    expect(await image.blockStatus(2 * MiB, 8 * MiB)).toMatchObject({ bytes: 6 * MiB, kind: 'zero' });
    await image.close();
  });

  it('a write into a hole is seen at once, also when block status was asked while the write was under way', async () => {
    const slow = new SlowWrites(await NodeFileDevice.open(sparseFile()));
    const image = new RawImage(slow);
    expect(await image.blockStatus(4 * MiB, 64 << 10)).toMatchObject({ kind: 'zero' });
    let open!: () => void;
    slow.gate = new Promise((resolve) => (open = resolve));
    const writing = image.write(4 * MiB, new Uint8Array(64 << 10).fill(1));
    // Asked while the write waits: still a hole on disk, and that answer must not be kept.
    expect(await image.blockStatus(4 * MiB, 64 << 10)).toMatchObject({ kind: 'zero' });
    open();
    await writing;
    expect(await image.blockStatus(4 * MiB, 64 << 10)).toMatchObject({ kind: 'data' });
    expect(await image.blockStatus(3 * MiB, 8 * MiB)).toMatchObject({ bytes: MiB, kind: 'zero' });
    await image.close();
  });

  it('zeroes over a hole write nothing; over data they are written', async () => {
    const path = sparseFile();
    const image = new RawImage(await NodeFileDevice.open(path));
    const before = statSync(path).blocks;
    await image.writeZeroes(3 * MiB, 2 * MiB, { unmap: true });
    expect(statSync(path).blocks).toBe(before);
    await image.writeZeroes(MiB, 64 << 10, { unmap: true });
    const back = new Uint8Array(64 << 10);
    await image.read(MiB, back);
    expect(back.every((b) => b === 0)).toBe(true);
    await image.close();
  });
});
