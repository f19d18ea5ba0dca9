/**
 * `npm run guest`: makes the files a Linux guest boots from under v86 and
 * puts them in guest/ at the project's root (ignored by git):
 *
 *   bios.bin, vgabios.bin   SeaBIOS and its VGA BIOS (Debian's seabios)
 *   vmlinuz                 Debian 12's i386 kernel (linux-image-686)
 *   initramfs.cpio.gz       built here: busybox-static, the disk modules, /init, dmload, dmsum
 *   manifest.json           each file's size and sha256, and where it came from
 *
 * On a Debian machine (apt-get, dpkg-deb; no root needed). Options:
 * --out DIR (default guest/), --refresh (download the packages again).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { cpioArchive, type CpioEntry } from './cpio.js';
import { MissingToolsError, fetchPackages } from './debian.js';
import { DMLOAD, DMSUM, INIT } from './init.js';
import { GUEST_MODULES, findModules, resolveModules } from './modules.js';

// Built to dist/node/scripts/guest/guest.js: the project is four folders up.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** The one path in `root` among `candidates` (a merged /usr puts lib and bin under usr/). */
function first(root: string, candidates: string[], what: string): string {
  const found = candidates.map((c) => join(root, c)).find((p) => existsSync(p));
  if (!found) throw new Error(`${what} is not in the unpacked packages (looked for ${candidates.join(', ')})`);
  return found;
}

function kernelFiles(root: string): { vmlinuz: string; modulesDir: string; version: string } {
  const boot = join(root, 'boot');
  const images = existsSync(boot) ? readdirSync(boot).filter((f) => f.startsWith('vmlinuz-')) : [];
  if (images.length !== 1) throw new Error(`expected one boot/vmlinuz-* in the kernel package, found ${images.length}`);
  const version = (images[0] as string).slice('vmlinuz-'.length);
  const modulesDir = first(root, [`lib/modules/${version}/kernel`, `usr/lib/modules/${version}/kernel`], `the modules of ${version}`);
  return { vmlinuz: join(boot, images[0] as string), modulesDir, version };
}

function initramfs(root: string, modulesDir: string): { bytes: Uint8Array; modules: string[] } {
  const busybox = readFileSync(first(root, ['bin/busybox', 'usr/bin/busybox'], 'busybox'));
  const modules = resolveModules(GUEST_MODULES, findModules(modulesDir));
  const entries: CpioEntry[] = [
    // The kernel opens /dev/console before it runs /init; devtmpfs is mounted over /dev afterwards.
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    ...['proc', 'sys', 'tmp', 'root', 'sbin', 'usr/bin', 'usr/sbin'].map((path): CpioEntry => ({ kind: 'dir', path })),
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: INIT, mode: 0o755 },
    { kind: 'file', path: 'bin/dmload', data: DMLOAD, mode: 0o755 },
    { kind: 'file', path: 'bin/dmsum', data: DMSUM, mode: 0o755 },
    ...modules.map((m): CpioEntry => ({ kind: 'file', path: `lib/modules/${m.name}.ko`, data: m.bytes })),
    { kind: 'file', path: 'etc/modules', data: modules.map((m) => m.name).join('\n') + '\n' },
  ];
  return { bytes: gzipSync(cpioArchive(entries), { level: 9 }), modules: modules.map((m) => m.name) };
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

function main(): void {
  const out = resolve(option('--out') ?? join(ROOT, 'guest'));
  const cache = join(out, '.cache');
  const say = (line: string) => console.log(`guest: ${line}`);
  mkdirSync(cache, { recursive: true });

  let unpacked;
  try {
    unpacked = fetchPackages(cache, process.argv.includes('--refresh'), say);
  } catch (err) {
    if (!(err instanceof MissingToolsError)) throw err;
    console.error(
      `npm run guest: this machine has no ${err.missing.join(', ')} (it fetches and unpacks Debian's packages with them): ` +
        `run it on Debian 12 or later and copy bios.bin, vgabios.bin, vmlinuz and initramfs.cpio.gz from its guest/ into ${out}/`,
    );
    process.exit(2);
  }
  const { root, debs } = unpacked;
  const kernel = kernelFiles(root);
  const built = initramfs(root, kernel.modulesDir);
  say(`initramfs: busybox, ${built.modules.length} modules in load order (${built.modules.join(', ')}), /init, dmload, dmsum`);

  const files: Record<string, Uint8Array> = {
    'bios.bin': readFileSync(first(root, ['usr/share/seabios/bios.bin'], "SeaBIOS's bios.bin")),
    'vgabios.bin': readFileSync(first(root, ['usr/share/seabios/vgabios-stdvga.bin'], "SeaBIOS's vgabios-stdvga.bin")),
    vmlinuz: readFileSync(kernel.vmlinuz),
    'initramfs.cpio.gz': built.bytes,
  };
  const manifest = {
    kernel: kernel.version,
    packages: Object.fromEntries(Object.entries(debs).map(([k, deb]) => [k, basename(deb)])),
    modules: built.modules,
    files: Object.fromEntries(Object.entries(files).map(([name, data]) => [name, { bytes: data.length, sha256: sha256(data) }])),
  };
  for (const [name, data] of Object.entries(files)) {
    writeFileSync(join(out, `${name}.tmp`), data);
    renameSync(join(out, `${name}.tmp`), join(out, name));
  }
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  for (const [name, { bytes, sha256: sum }] of Object.entries(manifest.files)) {
    console.log(`${name.padEnd(18)} ${String(bytes).padStart(9)} bytes  sha256 ${sum}`);
  }
  say(`written to ${out}/ (kernel ${kernel.version})`);
}

main();
