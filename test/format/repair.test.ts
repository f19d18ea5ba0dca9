/** Leaked clusters (what an interruption can leave) are given back before a job resumes. */
import { describe, expect, it, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImageFile, openImageFile } from '../../src/cli/node-images.js';
import { repairLeaks } from '../../src/format/repair.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { qemuCheck, requireQemu } from '../helpers/qemu.js';

const dir = mkdtempSync(join(tmpdir(), 'diskmirror-repair-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('repairLeaks', () => {
  it('frees clusters counted but not referenced; qemu-img check goes from 3 (leaks) to 0', async () => {
    requireQemu();
    const path = join(dir, 'leaky.qcow2');
    const image = await createImageFile(path, { format: 'qcow2', size: 4 << 20 });
    await image.write(0, new Uint8Array(256 << 10).fill(7));
    await image.flush();
    // Count two clusters past the end of the file as in use, as a crash between allocation and mapping would.
    const qcow2 = image as Qcow2Image;
    const refcounts = await qcow2.refcounts();
    const clusterSize = qcow2.header.clusterSize;
    const first = Math.ceil(qcow2.file.size / clusterSize);
    await qcow2.file.write(first * clusterSize, new Uint8Array(2 * clusterSize));
    await refcounts.set(first, 1);
    await refcounts.set(first + 1, 1);
    await refcounts.flush();
    await image.close();
    expect((await qemuCheck(path)).code).toBe(3);

    const reopened = await openImageFile(path);
    expect(await repairLeaks(reopened)).toEqual({ leaks: 2 });
    await reopened.close();
    expect((await qemuCheck(path)).code).toBe(0);
    const again = await openImageFile(path);
    expect(await repairLeaks(again)).toEqual({ leaks: 0 });
    await again.close();
  });

  it('leaves raw images and read-only images alone', async () => {
    const raw = await createImageFile(join(dir, 'x.raw'), { format: 'raw', size: 1 << 20 });
    expect(await repairLeaks(raw)).toEqual({ leaks: 0 });
    await raw.close();
  });
});
