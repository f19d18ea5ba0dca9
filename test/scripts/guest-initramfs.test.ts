/**
 * The pieces `npm run guest` builds the initramfs with: the newc cpio writer
 * (read back here by a reader of the format's own, no `cpio` program), and
 * the module list read from ELF `.modinfo` sections and put in load order.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { NEWC_HEADER_BYTES, NEWC_TRAILER, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, cpioArchive } from '../../scripts/guest/cpio.js';
import { findModules, modinfo, needs, resolveModules } from '../../scripts/guest/modules.js';

interface Parsed {
  name: string;
  fields: number[];
  data: Uint8Array;
}

const FIELDS = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'filesize', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor', 'namesize', 'check'];
const field = (e: Parsed, name: string) => e.fields[FIELDS.indexOf(name)] as number;

/** Reads a newc archive as the kernel does, checking the magic and both paddings. */
function readNewc(archive: Uint8Array): Parsed[] {
  const text = (a: number, b: number) => new TextDecoder().decode(archive.subarray(a, b));
  const out: Parsed[] = [];
  let at = 0;
  for (;;) {
    expect(at % 4).toBe(0);
    expect(text(at, at + 6)).toBe('070701');
    const fields = FIELDS.map((_, i) => {
      const hex = text(at + 6 + i * 8, at + 14 + i * 8);
      expect(hex).toMatch(/^[0-9a-f]{8}$/);
      return parseInt(hex, 16);
    });
    const namesize = fields[11] as number;
    const filesize = fields[6] as number;
    const nameAt = at + NEWC_HEADER_BYTES;
    expect(archive[nameAt + namesize - 1]).toBe(0);
    const name = text(nameAt, nameAt + namesize - 1);
    const dataAt = nameAt + namesize + ((4 - ((NEWC_HEADER_BYTES + namesize) % 4)) % 4);
    const data = archive.subarray(dataAt, dataAt + filesize);
    const padding = archive.subarray(dataAt + filesize, dataAt + filesize + ((4 - (filesize % 4)) % 4));
    expect([...padding].every((b) => b === 0)).toBe(true);
    at = dataAt + filesize + padding.length;
    out.push({ name, fields, data });
    if (name === NEWC_TRAILER) break;
  }
  expect(at).toBe(archive.length);
  return out;
}

describe('the newc cpio writer', () => {
  const busybox = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
  const entries = [
    { kind: 'char', path: '/dev/console', major: 5, minor: 1 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: '#!/bin/sh\necho hi\n', mode: 0o755 },
    { kind: 'dir', path: 'proc' },
  ] as const;

  it('writes every entry, a folder before what it holds, and the trailer', () => {
    const parsed = readNewc(cpioArchive(entries));
    expect(parsed.map((e) => e.name)).toEqual(['dev', 'dev/console', 'bin', 'bin/busybox', 'bin/sh', 'init', 'proc', NEWC_TRAILER]);
    const byName = new Map(parsed.map((e) => [e.name, e]));
    const console_ = byName.get('dev/console')!;
    expect(field(console_, 'mode')).toBe(S_IFCHR | 0o600);
    expect([field(console_, 'rdevmajor'), field(console_, 'rdevminor')]).toEqual([5, 1]);
    expect(field(byName.get('dev')!, 'mode')).toBe(S_IFDIR | 0o755);
    expect(field(byName.get('bin/busybox')!, 'mode')).toBe(S_IFREG | 0o755);
    expect([...byName.get('bin/busybox')!.data]).toEqual([...busybox]);
    expect(field(byName.get('bin/sh')!, 'mode')).toBe(S_IFLNK | 0o777);
    expect(new TextDecoder().decode(byName.get('bin/sh')!.data)).toBe('busybox');
    expect(new TextDecoder().decode(byName.get('init')!.data)).toBe('#!/bin/sh\necho hi\n');
    // Distinct inode numbers (the kernel links entries that share one), every owner root, every time 0.
    const inodes = parsed.filter((e) => e.name !== NEWC_TRAILER).map((e) => field(e, 'ino'));
    expect(new Set(inodes).size).toBe(inodes.length);
    expect(parsed.every((e) => field(e, 'uid') === 0 && field(e, 'gid') === 0 && field(e, 'mtime') === 0)).toBe(true);
  });

  it('gives the same bytes for the same entries, and survives gzip as the kernel gets it', () => {
    const a = cpioArchive(entries);
    expect(Buffer.from(cpioArchive(entries)).equals(Buffer.from(a))).toBe(true);
    expect(Buffer.from(gunzipSync(gzipSync(a))).equals(Buffer.from(a))).toBe(true);
  });

  it('refuses a path twice, and a path that leaves the archive', () => {
    expect(() => cpioArchive([{ kind: 'dir', path: 'a' }, { kind: 'dir', path: 'a/' }])).toThrow(/twice/);
    expect(() => cpioArchive([{ kind: 'file', path: 'a/b', data: '' }, { kind: 'dir', path: 'a' }])).toThrow(/twice/);
    expect(() => cpioArchive([{ kind: 'file', path: '../etc/passwd', data: '' }])).toThrow(/not a path inside/);
  });
});

/** A minimal ELF32 little-endian object with a section-name table and a `.modinfo` holding `info`. */
function elfWithModinfo(info: string[]): Uint8Array {
  const shstrtab = new TextEncoder().encode('\0.shstrtab\0.modinfo\0');
  const modinfoBytes = new TextEncoder().encode(info.map((s) => s + '\0').join(''));
  const shoff = 52 + shstrtab.length + modinfoBytes.length;
  const out = new Uint8Array(shoff + 3 * 40);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  v.setUint32(0x20, shoff, true);
  v.setUint16(0x2e, 40, true);
  v.setUint16(0x30, 3, true);
  v.setUint16(0x32, 1, true);
  out.set(shstrtab, 52);
  out.set(modinfoBytes, 52 + shstrtab.length);
  const section = (i: number, name: number, offset: number, size: number) => {
    v.setUint32(shoff + i * 40, name, true);
    v.setUint32(shoff + i * 40 + 16, offset, true);
    v.setUint32(shoff + i * 40 + 20, size, true);
  };
  section(1, 1, 52, shstrtab.length);
  section(2, 11, 52 + shstrtab.length, modinfoBytes.length);
  return out;
}

describe('the guest modules', () => {
  it("reads a module's depends and its softdep pre: names from .modinfo", () => {
    const info = modinfo(elfWithModinfo(['license=GPL', 'softdep=pre: crct10dif', 'depends=crct10dif_common,scsi-mod', 'name=crc_t10dif']));
    expect(info.get('license')).toEqual(['GPL']);
    expect(needs(info)).toEqual(['crct10dif_common', 'scsi_mod', 'crct10dif']);
    expect(() => modinfo(new Uint8Array(64))).toThrow(/not an ELF/);
  });

  it('puts each module after what it needs, and names a missing dependency', () => {
    const dir = mkdtempSync(join(tmpdir(), 'diskmirror-modules-'));
    const add = (path: string, info: string[]) => {
      mkdirSync(join(dir, path, '..'), { recursive: true });
      writeFileSync(join(dir, path), elfWithModinfo(info));
    };
    add('drivers/ata/ata_piix.ko', ['depends=libata']);
    add('drivers/ata/libata.ko', ['depends=scsi_mod']);
    add('drivers/scsi/scsi_mod.ko', ['depends=scsi_common']);
    add('drivers/scsi/scsi_common.ko', ['depends=']);
    add('drivers/scsi/sd_mod.ko', ['depends=scsi_mod,t10-pi']);
    add('block/t10-pi.ko', ['depends=crc-t10dif']);
    add('lib/crc-t10dif.ko', ['softdep=pre: crct10dif', 'depends=']);
    const files = findModules(dir);
    expect(resolveModules(['ata_piix', 'sd_mod'], files).map((m) => m.name)).toEqual(['scsi_common', 'scsi_mod', 'libata', 'ata_piix', 'crc_t10dif', 't10_pi', 'sd_mod']);
    add('drivers/scsi/sr_mod.ko', ['depends=cdrom']);
    expect(() => resolveModules(['sr_mod'], findModules(dir))).toThrow(/module cdrom \(needed by sr_mod\) is not in the kernel package/);
  });
});
