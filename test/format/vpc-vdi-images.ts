/**
 * Shared by the vpc, vdi and vhdx tests: the subformats, images made by
 * qemu-img and qemu-io with data, holes (whole blocks never written) and
 * zero ranges, and the oracle's reading of them.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import type { FormatName } from '../../src/format/image-format.js';
import { qemuImg } from '../helpers/qemu.js';
import { randInt, rng } from '../helpers/random.js';
import { findDiff, mixedData, qemuIoBatched, readAll } from './qcow2-images.js';

export const MiB = 1 << 20;

export interface Subformat {
  label: string;
  format: Extract<FormatName, 'vpc' | 'vdi' | 'vhdx'>;
  /** qemu-img's -o for it. */
  options: string;
  /** Data blocks the format has (dynamic images map them). */
  dynamic: boolean;
}

export const SUBFORMATS: readonly Subformat[] = [
  { label: 'vpc dynamic', format: 'vpc', options: 'subformat=dynamic', dynamic: true },
  { label: 'vpc fixed', format: 'vpc', options: 'subformat=fixed', dynamic: false },
  { label: 'vdi dynamic', format: 'vdi', options: 'static=off', dynamic: true },
  { label: 'vdi static', format: 'vdi', options: 'static=on', dynamic: false },
];

/**
 * A raw file of `bytes`: mixed data in a few regions, zeroes elsewhere (so
 * that whole 1 and 2 MiB blocks stay holes in a converted image).
 */
export function writeSparseRaw(path: string, bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const next = rng(seed);
  for (let region = 0; region < 4; region++) {
    const length = 4096 * (1 + randInt(next, 96));
    const at = 512 * randInt(next, (bytes - length) / 512);
    out.set(mixedData(length, seed + region), at);
  }
  writeFileSync(path, out);
  return out;
}

/** qemu-io writes of patterns and of zeroes (qemu-io -z: no vpc or vdi driver has a zero write, so zeroes are written). */
export function dataAndZeroOps(bytes: number, count: number, seed: number): string[] {
  const next = rng(seed);
  const ops: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 512 * (1 + randInt(next, 256));
    const off = 512 * randInt(next, (bytes - len) / 512);
    ops.push(randInt(next, 3) === 0 ? `write -z ${off} ${len}` : `write -P 0x${(1 + randInt(next, 254)).toString(16)} ${off} ${len}`);
  }
  return ops;
}

/** An image of `sub` made by qemu-img convert from a sparse raw file, then changed by qemu-io. */
export async function qemuImage(sub: Subformat, raw: string, path: string, bytes: number, seed: number): Promise<void> {
  writeSparseRaw(raw, bytes, seed);
  await qemuImg('convert', '-f', 'raw', '-O', sub.format, '-o', sub.options, raw, path);
  await qemuIoBatched(path, dataAndZeroOps(bytes, 24, seed + 1), ['-f', sub.format]);
}

/** What qemu-img reads of an image: `convert -O raw`. */
export async function qemuRaw(path: string, format: string, scratch: string): Promise<Uint8Array> {
  await qemuImg('convert', '-f', format, '-O', 'raw', path, scratch);
  return readFileSync(scratch);
}

/** diskmirror reads every byte of `path` as qemu-img does. */
export async function expectReadsAsQemu(path: string, format: FormatName, scratch: string): Promise<Uint8Array> {
  const theirs = await qemuRaw(path, format, scratch);
  const image = await openImageFile(path, { readOnly: true, format });
  try {
    const ours = await readAll(image);
    expect(ours.length).toBe(theirs.length);
    expect(findDiff(ours, theirs), `first differing byte of ${path}`).toBe(-1);
    return ours;
  } finally {
    await image.close();
  }
}
