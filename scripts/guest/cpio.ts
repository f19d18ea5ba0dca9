/**
 * A newc ("SVR4 with no CRC") cpio archive, the format the Linux kernel
 * unpacks an initramfs from (Documentation/driver-api/early-userspace/
 * buffer-format.rst). Each entry is a 110-byte ASCII header (the magic
 * `070701` and thirteen 8-digit hexadecimal fields), the name with its NUL,
 * padding to a multiple of 4, the data, padding to a multiple of 4; the
 * archive ends with an entry named `TRAILER!!!`.
 *
 * The kernel creates each entry where its name says and does not make
 * missing parent folders, so `cpioArchive` adds a folder entry before the
 * first entry that needs it. Every time stamp is 0 and every owner root:
 * the same entries give the same bytes.
 */

export const NEWC_MAGIC = '070701';
export const NEWC_HEADER_BYTES = 110;
export const NEWC_TRAILER = 'TRAILER!!!';

/** File type bits of `mode` (as in stat.h). */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array | string; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'char'; path: string; major: number; minor: number; mode?: number };

const encoder = new TextEncoder();

/** The path as the archive names it: relative, no leading `/` or `./`, no empty or `..` part. */
export function archivePath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new Error(`cpio: ${JSON.stringify(path)} is not a path inside the archive`);
  return parts.join('/');
}

function hex8(value: number, field: string, name: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`cpio: ${field} ${value} of ${name} does not fit 8 hexadecimal digits`);
  return value.toString(16).padStart(8, '0');
}

const pad4 = (bytes: number) => (4 - (bytes % 4)) % 4;

interface CpioRecord {
  name: string;
  mode: number;
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
}

function recordOf(entry: CpioEntry): CpioRecord {
  const name = archivePath(entry.path);
  switch (entry.kind) {
    case 'dir':
      return { name, mode: S_IFDIR | (entry.mode ?? 0o755), data: new Uint8Array(0), rdevMajor: 0, rdevMinor: 0 };
    case 'file': {
      const data = typeof entry.data === 'string' ? encoder.encode(entry.data) : entry.data;
      return { name, mode: S_IFREG | (entry.mode ?? 0o644), data, rdevMajor: 0, rdevMinor: 0 };
    }
    case 'symlink':
      return { name, mode: S_IFLNK | 0o777, data: encoder.encode(entry.target), rdevMajor: 0, rdevMinor: 0 };
    case 'char':
      return { name, mode: S_IFCHR | (entry.mode ?? 0o600), data: new Uint8Array(0), rdevMajor: entry.major, rdevMinor: entry.minor };
  }
}

function header(r: CpioRecord, ino: number): Uint8Array {
  const nameBytes = encoder.encode(r.name).length + 1;
  const fields: [string, number][] = [
    ['ino', ino],
    ['mode', r.mode],
    ['uid', 0],
    ['gid', 0],
    ['nlink', (r.mode & 0o170000) === S_IFDIR ? 2 : 1],
    ['mtime', 0],
    ['filesize', r.data.length],
    ['devmajor', 0],
    ['devminor', 0],
    ['rdevmajor', r.rdevMajor],
    ['rdevminor', r.rdevMinor],
    ['namesize', nameBytes],
    ['check', 0],
  ];
  return encoder.encode(NEWC_MAGIC + fields.map(([field, v]) => hex8(v, field, r.name)).join(''));
}

/**
 * The archive of `entries`, in their order, each folder they sit in added
 * before them when not given; a path given twice is refused (the kernel
 * would keep the last, which hides a mistake).
 */
export function cpioArchive(entries: readonly CpioEntry[]): Uint8Array {
  const records: CpioRecord[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    const r = recordOf(entry);
    const parts = r.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!seen.has(dir)) {
        seen.add(dir);
        records.push(recordOf({ kind: 'dir', path: dir }));
      }
    }
    if (seen.has(r.name)) throw new Error(`cpio: ${r.name} is in the archive twice (or is a folder already made for an entry inside it)`);
    seen.add(r.name);
    records.push(r);
  }
  records.push({ name: NEWC_TRAILER, mode: 0, data: new Uint8Array(0), rdevMajor: 0, rdevMinor: 0 });

  const chunks: Uint8Array[] = [];
  let total = 0;
  const push = (bytes: Uint8Array) => {
    chunks.push(bytes);
    total += bytes.length;
  };
  records.forEach((r, i) => {
    // Inode numbers only have to differ between entries (hard links share one); the trailer has 0.
    push(header(r, r.name === NEWC_TRAILER ? 0 : i + 1));
    const name = encoder.encode(r.name + '\0');
    push(name);
    push(new Uint8Array(pad4(NEWC_HEADER_BYTES + name.length)));
    push(r.data);
    push(new Uint8Array(pad4(r.data.length)));
  });
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}
