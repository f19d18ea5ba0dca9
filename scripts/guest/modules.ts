/**
 * The kernel modules the guest loads before its disk appears, found in an
 * unpacked linux-image package and put in the order insmod needs (each after
 * what it depends on). A package carries no modules.dep (depmod makes it at
 * install time), so the dependencies are read where depmod reads them: the
 * `depends=` and `softdep=` strings of each module's `.modinfo` ELF section.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decompress as zstdDecompress } from 'fzstd';

/**
 * What the guest's /dev/sda needs from Debian 12's i386 kernel (6.1), whose
 * disk drivers are modules: the PIIX IDE controller v86 emulates (ata_piix)
 * and SCSI disks (sd_mod). The two crypto modules go first by name: the CRC
 * libraries sd_mod pulls in (crc-t10dif, crc64-rocksoft via t10-pi) ask the
 * crypto API for these algorithms, which would load them through modprobe;
 * the guest has no modprobe set up, so they are loaded before.
 */
export const GUEST_MODULES = ['crct10dif_generic', 'crc64_rocksoft_generic', 'sd_mod', 'ata_piix'] as const;

/** Module names compare with `-` and `_` as the same character, as the kernel does. */
export const moduleName = (name: string) => name.replace(/-/g, '_');

export interface ModuleFile {
  /** The module's name (`_` for `-`). */
  name: string;
  /** The file, as found (.ko, .ko.xz, .ko.zst, .ko.gz). */
  path: string;
}

const MODULE_FILE = /^(.*)\.ko(\.xz|\.zst|\.gz)?$/;

/** Every module file under `dir` (the package's lib/modules/VERSION/kernel), by name. */
export function findModules(dir: string): Map<string, ModuleFile> {
  const found = new Map<string, ModuleFile>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d)) {
      const path = join(d, entry);
      if (statSync(path).isDirectory()) walk(path);
      else {
        const m = MODULE_FILE.exec(entry);
        if (m?.[1]) found.set(moduleName(m[1]), { name: moduleName(m[1]), path });
      }
    }
  };
  walk(dir);
  return found;
}

/**
 * The module file's bytes, uncompressed (busybox's insmod takes a plain ELF).
 * Debian 12 ships its modules uncompressed; later releases compress them
 * with xz (decompressed by the machine's `xz`, Node's zlib has no xz) or zstd.
 */
export function moduleBytes(path: string): Uint8Array {
  const data = readFileSync(path);
  if (path.endsWith('.ko')) return data;
  if (path.endsWith('.zst')) return zstdDecompress(data);
  if (path.endsWith('.gz')) return execFileSync('gzip', ['-dc'], { input: data, maxBuffer: 1 << 30 });
  try {
    return execFileSync('xz', ['-dc'], { input: data, maxBuffer: 1 << 30 });
  } catch (err) {
    throw new Error(`${path} is xz-compressed and the xz program failed or is missing (sudo apt-get install xz-utils): ${(err as Error).message}`);
  }
}

/** The NUL-separated `key=value` strings of an ELF module's `.modinfo` section (32- or 64-bit, either byte order). */
export function modinfo(elf: Uint8Array): Map<string, string[]> {
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 52 || view.getUint32(0) !== 0x7f454c46) throw new Error('not an ELF file');
  const is64 = elf[4] === 2;
  const little = elf[5] === 1;
  const u16 = (o: number) => view.getUint16(o, little);
  const u32 = (o: number) => view.getUint32(o, little);
  const addr = (o: number) => (is64 ? Number(view.getBigUint64(o, little)) : u32(o));
  const shoff = addr(is64 ? 0x28 : 0x20);
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  const shstrndx = u16(is64 ? 0x3e : 0x32);
  const section = (i: number) => {
    const h = shoff + i * shentsize;
    return { name: u32(h), offset: addr(h + (is64 ? 0x18 : 0x10)), size: addr(h + (is64 ? 0x20 : 0x14)) };
  };
  const strtab = section(shstrndx);
  const cstring = (at: number) => {
    let end = at;
    while (end < elf.length && elf[end] !== 0) end++;
    return new TextDecoder().decode(elf.subarray(at, end));
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstring(strtab.offset + s.name) !== '.modinfo') continue;
    for (const item of new TextDecoder().decode(elf.subarray(s.offset, s.offset + s.size)).split('\0')) {
      const eq = item.indexOf('=');
      if (eq <= 0) continue;
      const key = item.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), item.slice(eq + 1)]);
    }
    return info;
  }
  throw new Error('no .modinfo section');
}

/** What a module needs loaded before it: its `depends=` and the modules its `softdep=` names with `pre:`. */
export function needs(info: Map<string, string[]>): string[] {
  const depends = (info.get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean);
  const pre = (info.get('softdep') ?? []).flatMap((s) => {
    const m = /pre:\s*([^:]*?)(?:\s+post:.*)?$/.exec(s);
    return m?.[1] ? m[1].split(/\s+/).filter(Boolean) : [];
  });
  return [...new Set([...depends, ...pre].map(moduleName))];
}

export interface ResolvedModule extends ModuleFile {
  bytes: Uint8Array;
}

/**
 * `wanted` and everything they need, each after what it needs. A `depends=`
 * name that no file provides is an error (the kernel would refuse the
 * module); a `softdep` name that is not a module file (an alias, such as a
 * crypto algorithm's name) is left to the caller's list.
 */
export function resolveModules(wanted: readonly string[], files: Map<string, ModuleFile>): ResolvedModule[] {
  const order: ResolvedModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, from: string | undefined, hard: boolean) => {
    const key = moduleName(name);
    if (state.get(key) === 'done') return;
    if (state.get(key) === 'visiting') throw new Error(`module dependency cycle through ${key}`);
    const file = files.get(key);
    if (!file) {
      if (!hard) return;
      throw new Error(`module ${key}${from ? ` (needed by ${from})` : ''} is not in the kernel package`);
    }
    state.set(key, 'visiting');
    const bytes = moduleBytes(file.path);
    const info = modinfo(bytes);
    const depends = new Set((info.get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean).map(moduleName));
    for (const dep of needs(info)) visit(dep, key, depends.has(dep));
    state.set(key, 'done');
    order.push({ ...file, bytes });
  };
  for (const name of wanted) visit(name, undefined, true);
  return order;
}
