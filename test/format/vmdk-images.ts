/**
 * Shared by the vmdk tests: images made by qemu-img (and qemu-io) with
 * data, holes (grains never written) and zero ranges, in each subformat,
 * and a streamOptimized image turned into the stream VMware writes (its
 * grain directory in a footer at the end, as qemu-img 7.2 never writes).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { qemuImg } from '../helpers/qemu.js';
import { qemuIoBatched } from './qcow2-images.js';
import { dataAndZeroOps, writeSparseRaw } from './vpc-vdi-images.js';

export interface VmdkSubformat {
  label: string;
  /** qemu-img's -o. */
  options: string;
  /** qemu-io can write it after it is made (a stream takes whole new grains only). */
  writable: boolean;
  /** Its data lives in files beside the descriptor. */
  extentFiles: boolean;
}

export const VMDK_SUBFORMATS: readonly VmdkSubformat[] = [
  { label: 'monolithicSparse', options: 'subformat=monolithicSparse', writable: true, extentFiles: false },
  { label: 'monolithicSparse zeroed_grain', options: 'subformat=monolithicSparse,zeroed_grain=on', writable: true, extentFiles: false },
  { label: 'streamOptimized', options: 'subformat=streamOptimized', writable: false, extentFiles: false },
  { label: 'monolithicFlat', options: 'subformat=monolithicFlat', writable: true, extentFiles: true },
  { label: 'twoGbMaxExtentSparse', options: 'subformat=twoGbMaxExtentSparse', writable: true, extentFiles: true },
  { label: 'twoGbMaxExtentFlat', options: 'subformat=twoGbMaxExtentFlat', writable: true, extentFiles: true },
];

/** An image of `sub` made by qemu-img convert from a sparse raw file of `bytes`, then (where it can be) changed by qemu-io: data and zero writes. */
export async function qemuVmdk(sub: VmdkSubformat, raw: string, path: string, bytes: number, seed: number): Promise<void> {
  writeSparseRaw(raw, bytes, seed);
  await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', sub.options, raw, path);
  if (sub.writable) await qemuIoBatched(path, dataAndZeroOps(bytes, 24, seed + 1), ['-f', 'vmdk']);
}

/**
 * Turns a streamOptimized image made by qemu-img into a stream with its
 * header in a footer: the header at 0 says the grain directory is at the
 * end, the last three sectors are the footer marker, the real header, and
 * the end-of-stream marker.
 */
export function moveHeaderToFooter(path: string): void {
  const bytes = new Uint8Array(readFileSync(path));
  const header = bytes.slice(0, 512);
  const footer = new Uint8Array(1536);
  const view = new DataView(footer.buffer);
  view.setUint32(12, 3, true); // footer marker: val 0, size 0, type 3
  footer.set(header, 512);
  // The end-of-stream marker is all zeroes.
  new DataView(bytes.buffer).setUint32(56, 0xffffffff, true);
  new DataView(bytes.buffer).setUint32(60, 0xffffffff, true);
  const out = new Uint8Array(bytes.length + footer.length);
  out.set(bytes);
  out.set(footer, bytes.length);
  writeFileSync(path, out);
}
