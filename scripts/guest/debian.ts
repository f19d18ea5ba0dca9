/**
 * Debian's packages for the guest, fetched with apt-get without root and
 * without touching the machine's apt state: the i386 architecture is added
 * for these commands only (`-o APT::Architectures::=`), the package lists
 * and downloads live in our own cache folder (Dir::State::Lists, Dir::Cache),
 * and `apt-get download` only downloads. dpkg-deb unpacks each package into
 * a folder of ours. A second run reuses the downloaded packages (`--refresh`
 * fetches the lists and packages again).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveCommand } from './commands.js';

/** What the guest is made of, by Debian 12's package names. */
export const PACKAGES = {
  /** The i386 kernel's metapackage; it depends on the versioned package that holds vmlinuz and the modules. */
  kernel: 'linux-image-686:i386',
  /** One static binary: the shell and every command the guest runs. */
  busybox: 'busybox-static:i386',
  /** SeaBIOS and its VGA BIOS (architecture `all`). */
  seabios: 'seabios',
} as const;

/** Programs this needs; a machine without one gets told which. */
export const APT_COMMANDS = ['apt-get', 'apt-cache', 'dpkg', 'dpkg-deb'] as const;

export interface Unpacked {
  /** The folder the packages were unpacked into. */
  root: string;
  /** The .deb files used, by package (the kernel's versioned package under `kernel`). */
  debs: Record<keyof typeof PACKAGES, string>;
}

function aptOptions(cache: string): string[] {
  const hostArch = execFileSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).trim();
  const archs = [...new Set([hostArch, 'i386'])];
  const options = [
    ...archs.flatMap((a) => ['-o', `APT::Architectures::=${a}`]),
    '-o', `Dir::State::Lists=${join(cache, 'lists')}`,
    '-o', `Dir::Cache=${join(cache, 'apt')}`,
    '-q',
  ];
  // As root, apt hands downloads to the _apt user, which cannot write our folder; it would warn and go on.
  if (process.getuid?.() === 0) options.push('-o', 'APT::Sandbox::User=root');
  return options;
}

const run = (cmd: string, args: string[], cwd?: string) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });

/** The versioned kernel package the metapackage depends on (e.g. linux-image-6.1.0-57-686:i386). */
function kernelPackage(options: string[]): string {
  let out: string;
  try {
    out = run('apt-cache', [...options, 'depends', PACKAGES.kernel]);
  } catch (err) {
    throw new Error(`apt-cache knows no ${PACKAGES.kernel} (the guest needs Debian's i386 kernel; Ubuntu has none since 20.04): ${(err as { stderr?: string }).stderr ?? err}`);
  }
  const m = /Depends:\s*(linux-image-[^\s<>]+)/.exec(out);
  if (!m?.[1]) throw new Error(`${PACKAGES.kernel} depends on no linux-image package:\n${out}`);
  return m[1].includes(':') ? m[1] : `${m[1]}:i386`;
}

/** The .deb in `dir` for `pkg` (a name, with or without :arch). */
function debFor(dir: string, pkg: string): string {
  const name = pkg.split(':')[0];
  const found = readdirSync(dir).filter((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'));
  if (found.length !== 1) throw new Error(`expected one ${name}_*.deb in ${dir}, found ${found.length}`);
  return join(dir, found[0] as string);
}

/** Downloads the packages into `cache` (or reuses them), unpacks them, and says where. */
export function fetchPackages(cache: string, refresh: boolean, say: (line: string) => void): Unpacked {
  const missing = APT_COMMANDS.filter((c) => !haveCommand(c));
  if (missing.length > 0) throw new MissingToolsError(missing);

  const debsDir = join(cache, 'debs');
  const record = join(cache, 'debs.json');
  let debs: Unpacked['debs'] | undefined;
  if (!refresh && existsSync(record)) {
    const kept = JSON.parse(readFileSync(record, 'utf8')) as Unpacked['debs'];
    if (Object.values(kept).every((f) => existsSync(f))) {
      debs = kept;
      say(`reusing the packages downloaded before (${debsDir}; --refresh to fetch again)`);
    }
  }
  if (!debs) {
    const options = aptOptions(cache);
    for (const dir of [join(cache, 'lists', 'partial'), join(cache, 'apt', 'archives', 'partial')]) mkdirSync(dir, { recursive: true });
    say('apt-get update (i386 added for this command only; lists kept in the cache folder)');
    try {
      run('apt-get', [...options, 'update']);
    } catch (err) {
      throw new Error(`apt-get update failed (the guest files come from Debian's mirrors): ${(err as { stderr?: string }).stderr ?? err}`);
    }
    const kernel = kernelPackage(options);
    rmSync(debsDir, { recursive: true, force: true });
    mkdirSync(debsDir, { recursive: true });
    say(`apt-get download ${kernel} ${PACKAGES.busybox} ${PACKAGES.seabios}`);
    try {
      run('apt-get', [...options, 'download', kernel, PACKAGES.busybox, PACKAGES.seabios], debsDir);
    } catch (err) {
      throw new Error(`apt-get download failed: ${(err as { stderr?: string }).stderr ?? err}`);
    }
    debs = { kernel: debFor(debsDir, kernel), busybox: debFor(debsDir, PACKAGES.busybox), seabios: debFor(debsDir, PACKAGES.seabios) };
    writeFileSync(record, JSON.stringify(debs, null, 2) + '\n');
  }

  const root = join(cache, 'unpacked');
  const marker = join(root, '.debs.json');
  const wanted = JSON.stringify(debs);
  if (!existsSync(marker) || readFileSync(marker, 'utf8') !== wanted) {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    for (const deb of Object.values(debs)) run('dpkg-deb', ['-x', deb, root]);
    writeFileSync(marker, wanted);
  }
  return { root, debs };
}

export class MissingToolsError extends Error {
  constructor(readonly missing: readonly string[]) {
    super(`missing ${missing.join(', ')}`);
  }
}
