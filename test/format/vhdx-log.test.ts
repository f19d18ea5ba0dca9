/**
 * The VHDX log, against qemu-img 7.2: a log entry written the way the
 * specification lays it out (data and zero descriptors, data sectors,
 * CRC-32C over the entry) into an image qemu-img made, the header's log
 * GUID set. Open read-only, it is refused as qemu-img refuses it; open
 * read-write, it is replayed, and the image equals the one `qemu-img check
 * -r all` replays, byte for byte as a disk, clean by qemu-img check, with
 * nothing left to replay. A log whose entry checksum is wrong has nothing
 * valid to replay: the image reads as it is, as qemu-img reads it.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../../src/cli/node-images.js';
import { FormatError } from '../../src/format/image-format.js';
import { crc32c } from '../../src/util/crc32c.js';
import { putChecksum } from '../../src/format/vhdx/header.js';
import { run as dm } from '../helpers/cli.js';
import { requireBuiltCommand } from '../helpers/require-program.js';
import { qemuCheck, qemuImg, requireQemu, run, tempDir } from '../helpers/qemu.js';
import { expectReadsAsQemu } from './vpc-vdi-images.js';

const KiB = 1024;
const MiB = KiB * KiB;
const SECTOR = 4 * KiB;

let dir: ReturnType<typeof tempDir>;
let n = 0;
const name = (ext: string) => dir.file(`l${++n}.${ext}`);

beforeAll(() => {
  requireQemu();
  requireBuiltCommand();
  dir = tempDir('diskmirror-vhdx-log-');
});
afterAll(() => dir.remove());

const ascii = (out: Uint8Array, at: number, text: string) => out.set(Array.from(text, (c) => c.charCodeAt(0)), at);

/** One log entry: a data descriptor (and its data sector) per write of 4 KiB, a zero descriptor per zero range. */
function logEntry(sequence: bigint, logGuid: Uint8Array, fileSize: number, writes: { offset: number; data: Uint8Array }[], zeroes: { offset: number; bytes: number }[]): Uint8Array {
  const count = writes.length + zeroes.length;
  const descSectors = Math.ceil((count + 2) / 128);
  const out = new Uint8Array((descSectors + writes.length) * SECTOR);
  const view = new DataView(out.buffer);
  ascii(out, 0, 'loge');
  view.setUint32(8, out.length, true);
  view.setBigUint64(16, sequence, true);
  view.setUint32(24, count, true);
  out.set(logGuid, 32);
  view.setBigUint64(48, BigInt(fileSize), true);
  view.setBigUint64(56, BigInt(fileSize), true);
  let d = 2;
  writes.forEach((w, i) => {
    const at = d++ * 32;
    ascii(out, at, 'desc');
    out.set(w.data.subarray(4092, 4096), at + 4);
    out.set(w.data.subarray(0, 8), at + 8);
    view.setBigUint64(at + 16, BigInt(w.offset), true);
    view.setBigUint64(at + 24, sequence, true);
    const sector = (descSectors + i) * SECTOR;
    ascii(out, sector, 'data');
    view.setUint32(sector + 4, Number(sequence >> 32n), true);
    out.set(w.data.subarray(8, 4092), sector + 8);
    view.setUint32(sector + 4092, Number(sequence & 0xffffffffn), true);
  });
  for (const z of zeroes) {
    const at = d++ * 32;
    ascii(out, at, 'zero');
    view.setBigUint64(at + 8, BigInt(z.bytes), true);
    view.setBigUint64(at + 16, BigInt(z.offset), true);
    view.setBigUint64(at + 24, sequence, true);
  }
  view.setUint32(4, crc32c(out), true);
  return out;
}

/** An image qemu-img made with data in its first block, and a log entry (to replay) that writes into that block and zeroes part of it. */
async function dirtyImage(corruptEntry = false): Promise<{ path: string; writeAt: number; zeroAt: number }> {
  const path = name('vhdx');
  await qemuImg('create', '-f', 'vhdx', '-o', 'block_size=1M', path, '4M');
  await run('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 1M 1M', path]);
  const file = new Uint8Array(readFileSync(path));
  const view = new DataView(file.buffer);
  const batOffset = Number(view.getBigUint64(192 * KiB + 16 + 16, true));
  const block0 = Number(view.getBigUint64(batOffset, true) & ~0xfffffn);
  const logGuid = new Uint8Array(16).map((_, i) => 0xa0 + i);
  const data = new Uint8Array(SECTOR).map((_, i) => (i * 7 + 3) & 0xff);
  const entry = logEntry(5n, logGuid, file.length, [{ offset: block0 + 8 * KiB, data }], [{ offset: block0 + 16 * KiB, bytes: 8 * KiB }]);
  if (corruptEntry) entry[entry.length - 100]! ^= 0xff;
  const logOffset = Number(view.getBigUint64(64 * KiB + 72, true));
  file.set(entry, logOffset);
  for (const header of [64 * KiB, 128 * KiB]) {
    file.set(logGuid, header + 48);
    putChecksum(file.subarray(header, header + SECTOR), 4);
  }
  writeFileSync(path, file);
  return { path, writeAt: 8 * KiB, zeroAt: 16 * KiB };
}

describe('vhdx log replay, as qemu-img replays it', () => {
  it('a log to replay: refused read-only (qemu-img too), in one line', async () => {
    const { path } = await dirtyImage();
    const theirs = await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', path, name('raw')]);
    expect(theirs.code).toBe(1);
    expect(theirs.stderr).toMatch(/contains a log that needs to be replayed/);
    const error = await openImageFile(path, { readOnly: true, format: 'vhdx' }).then(
      async (image) => (await image.close(), null),
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(FormatError);
    expect((error as FormatError).field).toBe('log');
    const ours = await dm(['info', path]);
    expect(ours.code).toBe(1);
    expect(ours.stderr.trim().split('\n')).toHaveLength(1);
    expect(ours.stderr).toMatch(/log that needs to be replayed/);
  });

  it('open read-write replays it: the disk equals what qemu-img check -r all makes of it, qemu-img checks it clean and reads it read-only', async () => {
    const { path, writeAt, zeroAt } = await dirtyImage();
    const theirs = name('vhdx');
    copyFileSync(path, theirs);
    const repaired = await run('qemu-img', ['check', '-r', 'all', theirs]);
    expect(repaired.code, repaired.stderr).toBe(0);
    const image = await openImageFile(path, { format: 'vhdx' });
    await image.close();
    const cmp = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', path, theirs]);
    expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
    expect((await qemuCheck(path, ['-f', 'vhdx'])).code).toBe(0);
    const bytes = await expectReadsAsQemu(path, 'vhdx', name('raw'));
    // The log's writes are there: its data sector, and zeroes where the block had 0x11.
    expect(bytes[writeAt]).toBe(3);
    expect(bytes[writeAt + 1]).toBe(10);
    expect(bytes.subarray(zeroAt, zeroAt + 8 * KiB).every((b) => b === 0)).toBe(true);
    expect(bytes[zeroAt + 8 * KiB]).toBe(0x11);
    // Nothing left to replay: it opens read-only.
    const again = await openImageFile(path, { readOnly: true, format: 'vhdx' });
    await again.close();
  });

  it('check -r all replays it as qemu-img check -r all does: the same report, exit code and JSON, and the same disk; without -r, check cannot open it, as qemu-img', async () => {
    const { path } = await dirtyImage();
    const copies = [name('vhdx'), name('vhdx'), name('vhdx')];
    for (const c of copies) copyFileSync(path, c);
    const [plain, theirsPlain] = [await dm(['check', path]), await run('qemu-img', ['check', copies[0]!])];
    expect([plain.code, theirsPlain.code]).toEqual([1, 1]);
    expect(plain.stderr).toMatch(/log that needs to be replayed.*check -r all/);
    const ours = await dm(['check', '-r', 'all', path]);
    const theirs = await run('qemu-img', ['check', '-r', 'all', copies[0]!]);
    expect([ours.code, ours.stdout]).toEqual([theirs.code, theirs.stdout]);
    expect(ours.stdout).toMatch(/1 corruptions/);
    const cmp = await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', path, copies[0]!]);
    expect(cmp.stdout, cmp.stderr).toMatch(/Images are identical/);
    const json = [await dm(['check', '--output=json', '-r', 'leaks', copies[1]!]), await run('qemu-img', ['check', '--output=json', '-r', 'leaks', copies[2]!])];
    expect(json.map((r) => r.code)).toEqual([0, 0]);
    expect(json[0]!.stdout.replace(copies[1]!, 'X')).toBe(json[1]!.stdout.replace(copies[2]!, 'X'));
    // Replayed: a second check has nothing to fix.
    const again = await dm(['check', path]);
    expect([again.code, again.stdout.trim()]).toEqual([0, 'No errors were found on the image.']);
  });

  it('an entry whose checksum is wrong is no log to replay: the image reads as it is, as qemu-img reads it', async () => {
    const { path, writeAt } = await dirtyImage(true);
    const bytes = await expectReadsAsQemu(path, 'vhdx', name('raw'));
    expect(bytes[writeAt]).toBe(0x11);
  });
});
