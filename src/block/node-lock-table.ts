/**
 * The kernel's table of file locks, as Linux shows it in /proc/locks: every
 * flock(2), POSIX record lock and open-file-description (OFD) lock on the
 * machine, whoever took it. Reading it lets a process see locks it cannot
 * take itself (a build without the native lock calls sees QEMU's locks and
 * other diskmirrors' all the same), and test a byte as QEMU does with
 * F_OFD_GETLK. An OFD lock shows no pid (-1); who holds one is found in the
 * lock lines of /proc/PID/fdinfo/FD.
 */
import * as fs from 'node:fs';

export interface LockEntry {
  kind: 'FLOCK' | 'POSIX' | 'OFDLCK' | string;
  type: 'READ' | 'WRITE' | string;
  /** The process that took it; -1 for an OFD lock. */
  pid: number;
  /** The locked file as the kernel names it: "MAJOR:MINOR:INODE" ("fe:00:2146728"). */
  file: string;
  start: number;
  /** The last byte locked (inclusive); Infinity for "to the end of the file". */
  end: number;
}

/**
 * Parses lock lines ("1: OFDLCK ADVISORY  READ -1 fe:00:2146871 201 201"),
 * from /proc/locks or the "lock:" lines of an fdinfo file. Blocked waiters
 * ("1: -> FLOCK ...") hold nothing and are left out; so are leases.
 */
export function parseLockLines(text: string): LockEntry[] {
  const entries: LockEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.replace(/^lock:\s*/, '').trim().split(/\s+/);
    if (fields.length < 8 || fields[1] === '->') continue;
    const [, kind, , type, pid, file, start, end] = fields as [string, string, string, string, string, string, string, string];
    if (kind !== 'FLOCK' && kind !== 'POSIX' && kind !== 'OFDLCK') continue;
    entries.push({ kind, type, pid: Number(pid), file, start: Number(start), end: end === 'EOF' ? Infinity : Number(end) });
  }
  return entries;
}

/** Every lock on the machine; null where the table cannot be read (not Linux, no /proc). */
export function readLockTable(): LockEntry[] | null {
  try {
    return parseLockLines(fs.readFileSync('/proc/locks', 'utf8'));
  } catch {
    return null;
  }
}

/** Linux's dev_t split as the lock table prints it ("fe:00"). */
function deviceName(dev: number): string {
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

/**
 * The name the lock table gives the file open on `fd`: read from the
 * descriptor's own lock lines when it holds a lock (exact, whatever the file
 * system reports to stat), else made from its device and inode.
 */
export function lockTableName(fd: number, stat: fs.Stats): string {
  try {
    const own = parseLockLines(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    const name = own.find((e) => e.file.endsWith(`:${stat.ino}`))?.file;
    if (name) return name;
  } catch {
    // No fdinfo here: the device and inode will do.
  }
  return `${deviceName(stat.dev)}:${stat.ino}`;
}

/** Whether `entry` locks `byte` of the file named `file`. */
export function covers(entry: LockEntry, file: string, byte: number): boolean {
  return entry.file === file && entry.start <= byte && byte <= entry.end;
}

/**
 * The processes whose descriptors hold a lock on `file` that `matches`,
 * found through /proc/PID/fdinfo (only processes this one may look at).
 * Looked for only to name a holder in a refusal.
 */
export function lockHolders(file: string, matches: (entry: LockEntry) => boolean): number[] {
  const pids: number[] = [];
  let dirs: string[];
  try {
    dirs = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return pids;
  }
  for (const dir of dirs) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${dir}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let text: string;
      try {
        text = fs.readFileSync(`/proc/${dir}/fdinfo/${fd}`, 'utf8');
      } catch {
        continue;
      }
      if (!text.includes(file) || !parseLockLines(text).some((e) => e.file === file && matches(e))) continue;
      pids.push(Number(dir));
      break;
    }
  }
  return pids;
}

/** `diskmirror (pid 42)`, or the program's name when it is not diskmirror. */
export function describeProcess(pid: number): string {
  try {
    // The program, or the script a runtime runs (node .../bin/diskmirror.js); not its arguments, which may name anything.
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (argv.slice(0, 2).some((a) => /(^|\/)diskmirror(\.c?js)?$/.test(a))) return `diskmirror (pid ${pid})`;
    const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return `${comm} (pid ${pid})`;
  } catch {
    return `pid ${pid}`;
  }
}
