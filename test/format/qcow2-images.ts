/**
 * Shared for the qcow2 tests: test data, images made with qemu-img/qemu-io
 * for each feature, and the comparisons with the oracle.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { mapImage, type MapExtent } from '../../src/format/map.js';
import { convertImage } from '../../src/cli/cmd-convert.js';
import { normalizeRanges, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap } from '../helpers/qemu.js';
import { randInt, rng } from '../helpers/random.js';

/** Test data that compresses in places: per 4 KiB block random bytes, text, a byte run, or zeroes. */
export function mixedData(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const next = rng(seed);
  const text = new TextEncoder().encode('diskmirror writes qcow2 the way QEMU reads it. ');
  for (let at = 0; at < bytes; at += 4096) {
    const end = Math.min(bytes, at + 4096);
    switch (randInt(next, 4)) {
      case 0:
        for (let i = at; i < end; i++) out[i] = randInt(next, 256);
        break;
      case 1:
        for (let i = at; i < end; i++) out[i] = text[(i + seed) % text.length]!;
        break;
      case 2:
        out.fill(randInt(next, 255) + 1, at, end);
        break;
      default:
        break; // zeroes
    }
  }
  return out;
}

/** A raw file of mixed data. */
export function writeMixed(path: string, bytes: number, seed: number): Uint8Array {
  const data = mixedData(bytes, seed);
  writeFileSync(path, data);
  return data;
}

/** Reads a whole image through diskmirror in pieces of varied, unaligned sizes. */
export async function readAll(image: ImageFormat, seed = 7): Promise<Uint8Array> {
  const out = new Uint8Array(image.size);
  const next = rng(seed);
  for (let offset = 0; offset < image.size; ) {
    const bytes = Math.min(image.size - offset, 1 + randInt(next, 3 << 20));
    await image.read(offset, out.subarray(offset, offset + bytes));
    offset += bytes;
  }
  return out;
}

export async function ourMap(image: ImageFormat): Promise<MapExtent[]> {
  const out: MapExtent[] = [];
  await mapImage(image, (e) => out.push(e));
  return out;
}

/**
 * The two checks every image made by qemu gets: every byte diskmirror
 * reads equals `qemu-img convert -O raw`, and the map agrees with
 * `qemu-img map` (data, and its depth, versus reads-as-zero).
 */
export async function verifyAgainstQemu(path: string, scratch: string): Promise<void> {
  const image = await openImageFile(path, { readOnly: true });
  try {
    const ours = await readAll(image);
    await qemuImg('convert', '-O', 'raw', path, scratch);
    const reference = readFileSync(scratch);
    expect(reference.length).toBe(ours.length);
    const firstDiff = Buffer.from(ours).compare(reference) === 0 ? -1 : findDiff(ours, reference);
    expect(firstDiff, `first differing byte of ${path}`).toBe(-1);
    await verifyMap(image, path);
  } finally {
    await image.close();
  }
}

/** diskmirror convert to qcow2 and to raw: qemu-img checks the qcow2 and compares both with the source. */
export async function verifyConvert(path: string, scratch: string): Promise<void> {
  for (const targetFormat of ['qcow2', 'raw'] as const) {
    const out = `${scratch}.${targetFormat}`;
    await convertImage(path, out, { targetFormat, create: {}, compress: false });
    if (targetFormat === 'qcow2') {
      const check = await qemuCheck(out);
      expect(check.code, `qemu-img check of the converted image: ${check.stderr}`).toBe(0);
    }
    const cmp = await qemuCompare(path, out);
    expect(cmp.stdout + cmp.stderr, `qemu-img compare ${path} ${out}`).toMatch(/^Images are identical/);
  }
}

export async function verifyMap(image: ImageFormat, path: string): Promise<void> {
  const theirs = normalizeRanges(await qemuMap(path));
  const ours = normalizeRanges(await ourMap(image));
  expect(ours).toEqual(theirs);
}

export function findDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** qemu-io commands for `count` seeded writes, zero writes and discards within `bytes`. */
export function randomOps(bytes: number, count: number, seed: number, maxLen = 256 << 10, kinds = ['write', 'write', 'write', 'zero', 'discard']): string[] {
  const next = rng(seed);
  const ops: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 512 * (1 + randInt(next, maxLen / 512));
    const off = 512 * randInt(next, (bytes - len) / 512);
    const kind = kinds[randInt(next, kinds.length)]!;
    if (kind === 'write') ops.push(`write -P 0x${(1 + randInt(next, 254)).toString(16)} ${off} ${len}`);
    else if (kind === 'zero') ops.push(`write -z ${off} ${len}`);
    else if (kind === 'zero-unmap') ops.push(`write -z -u ${off} ${len}`);
    else ops.push(`discard ${off} ${len}`);
  }
  return ops;
}

/** Runs qemu-io commands in batches (one process per 200 commands). */
export async function qemuIoBatched(image: string, commands: string[], options: string[] = []): Promise<void> {
  for (let i = 0; i < commands.length; i += 200) await qemuIo(image, commands.slice(i, i + 200), options);
}
