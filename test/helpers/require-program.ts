/**
 * Suites that need a program from outside the project (QEMU's tools, nbdkit,
 * websockify) or the built command say so before they start: they fail, never
 * skip, with the program's name and how to install it. `.ci/run` installs
 * them all; `npm run test:fast` runs only the suites that need none of them.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { haveCommand } from '../../scripts/guest/commands.js';

/** How to get each program these tests run (Debian package names, as .ci/run installs them). */
export const INSTALL = {
  'qemu-img': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-io': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-nbd': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-system-x86_64': 'sudo apt-get install -y --no-install-recommends qemu-system-x86 (.ci/run installs it)',
  nbdkit: 'sudo apt-get install -y nbdkit (.ci/run installs it)',
  websockify: 'sudo apt-get install -y websockify (.ci/run installs it)',
  tar: 'sudo apt-get install -y tar',
} as const;

export type Program = keyof typeof INSTALL;

/** Fails the suite (call it in beforeAll) when `program` is not on PATH, saying how to install it. */
export function requireProgram(program: Program, why = 'these tests run it'): void {
  if (!haveCommand(program)) throw new Error(`${program} is required (${why}) and is not on PATH: ${INSTALL[program]}`);
}

const BUILT_COMMAND = new URL('../../dist/cli/diskmirror.cjs', import.meta.url);

/** Fails the suite (call it in beforeAll) when the diskmirror command has not been built. */
export function requireBuiltCommand(): void {
  if (!existsSync(BUILT_COMMAND)) {
    throw new Error(`the built diskmirror command (${BUILT_COMMAND.pathname}) is required and is missing: run npm run build:node first (npm test does)`);
  }
}

/** What `npm run guest` puts in guest/ for the tests that boot a Linux guest. */
export const GUEST_DIR = fileURLToPath(new URL('../../guest/', import.meta.url));
export const GUEST_FILES = ['bios.bin', 'vgabios.bin', 'vmlinuz', 'initramfs.cpio.gz'] as const;

/** Fails the suite (call it in beforeAll) when the guest files are missing, saying how to make them. */
export function requireGuestFiles(): void {
  const missing = GUEST_FILES.filter((name) => !existsSync(join(GUEST_DIR, name)));
  if (missing.length > 0) {
    throw new Error(`the guest files are required and ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing from ${GUEST_DIR}: run npm run guest (on Debian; .ci/run does)`);
  }
}
