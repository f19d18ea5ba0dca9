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

/**
 * A qcow2 image with some data whose next `count` clusters past the end of
 * the file are counted as in use, as a crash between allocation and mapping
 * leaves them; `written`: the file was extended over them (their writes landed).
 */
async function leakyImage(name: string, count: number, written: boolean): Promise<string> {
  const path = join(dir, name);
  const image = (await createImageFile(path, { format: 'qcow2', size: 4 << 20 })) as Qcow2Image;
  await image.write(0, new Uint8Array(256 << 10).fill(7));
  await image.flush();
  const refcounts = await image.refcounts();
  const clusterSize = image.header.clusterSize;
  const first = Math.ceil(image.file.size / clusterSize);
  if (written) await image.file.write(first * clusterSize, new Uint8Array(count * clusterSize));
  for (let i = 0; i < count; i++) await refcounts.set(first + i, 1);
  await refcounts.flush();
  await image.close();
  return path;
}

describe('repairLeaks', () => {
  it('frees clusters counted but not referenced; qemu-img check goes from 3 (leaks) to 0', async () => {
    requireQemu();
    const path = await leakyImage('leaky.qcow2', 2, true);
    expect((await qemuCheck(path)).code).toBe(3);

    const reopened = await openImageFile(path);
    expect(await repairLeaks(reopened)).toEqual({ leaks: 2 });
    await reopened.close();
    expect((await qemuCheck(path)).code).toBe(0);
    const again = await openImageFile(path);
    expect(await repairLeaks(again)).toEqual({ leaks: 0 });
    await again.close();
  });

  it('frees a cluster counted past the end of the file, which no check sees until the file grows past it', async () => {
    requireQemu();
    // Killed after the cluster's refcount was stored, before anything was written to it or after it.
    const path = await leakyImage('past-end.qcow2', 1, false);
    expect((await qemuCheck(path)).code).toBe(0);

    const reopened = await openImageFile(path);
    expect(await repairLeaks(reopened)).toEqual({ leaks: 1 });
    // The job then writes on: the file grows past that cluster, which must not be left counted.
    await reopened.write(1 << 20, new Uint8Array(1 << 20).fill(9));
    await reopened.close();
    expect(await qemuCheck(path)).toMatchObject({ code: 0, leaks: 0 });
  });

  it('leaves raw images and read-only images alone', async () => {
    const raw = await createImageFile(join(dir, 'x.raw'), { format: 'raw', size: 1 << 20 });
    expect(await repairLeaks(raw)).toEqual({ leaks: 0 });
    await raw.close();
  });
});
