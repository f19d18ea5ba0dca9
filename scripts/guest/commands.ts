import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The program is an executable file in a folder of PATH, as the shell's `command -v` finds it. */
export function haveCommand(program: string): boolean {
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
