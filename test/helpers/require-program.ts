/**
 * Suites that need a program from outside the project (QEMU's tools, nbdkit,
 * websockify) or the built command say so before they start: they fail, never
 * skip, with the program's name and how to install it. `.ci/run` installs
 * them all; `npm run test:fast` runs only the suites that need none of them.
 */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** How to get each program these tests run (Debian package names, as .ci/run installs them). */
export const INSTALL = {
  'qemu-img': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-io': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-nbd': 'sudo apt-get install -y qemu-utils (.ci/run installs it)',
  'qemu-system-x86_64': 'sudo apt-get install -y --no-install-recommends qemu-system-x86 (.ci/run installs it)',
  nbdkit: 'sudo apt-get install -y nbdkit (.ci/run installs it)',
  websockify: 'sudo apt-get install -y websockify (.ci/run installs it)',
} as const;

export type Program = keyof typeof INSTALL;

/** The program is an executable file in a folder of PATH, as the shell's `command -v` finds it. */
export function haveProgram(program: string): boolean {
  for (const folder of (process.env.PATH ?? '').split(delimiter)) {
    if (!folder) continue;
    const path = join(folder, program);
    try {
      accessSync(path, constants.X_OK);
      if (statSync(path).isFile()) return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/** Fails the suite (call it in beforeAll) when `program` is not on PATH, saying how to install it. */
export function requireProgram(program: Program, why = 'these tests run it'): void {
  if (!haveProgram(program)) throw new Error(`${program} is required (${why}) and is not on PATH: ${INSTALL[program]}`);
}

const BUILT_COMMAND = new URL('../../dist/cli/diskmirror.cjs', import.meta.url);

/** Fails the suite (call it in beforeAll) when the diskmirror command has not been built. */
export function requireBuiltCommand(): void {
  if (!existsSync(BUILT_COMMAND)) {
    throw new Error(`the built diskmirror command (${BUILT_COMMAND.pathname}) is required and is missing: run npm run build:node first (npm test does)`);
  }
}
