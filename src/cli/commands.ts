/** The command table: each command names its usage, help text and runner. */
import { infoCommand } from './cmd-info.js';
import { mirrorCommand } from './cmd-mirror.js';
import { checkCommand } from './cmd-check.js';
import { compareCommand } from './cmd-compare.js';
import { convertCommand } from './cmd-convert.js';
import { createCommand } from './cmd-create.js';
import { mapCommand } from './cmd-map.js';

export interface Command {
  usage: string;
  help: string;
  run(argv: string[]): Promise<number>;
  /** Exit code for an error that is not a usage error (default 1). */
  errorExit?: number;
  /** Exit code for bad usage (default 2). */
  usageExit?: number;
}

export const COMMANDS: Record<string, Command> = {
  info: infoCommand,
  mirror: mirrorCommand,
  check: checkCommand,
  map: mapCommand,
  create: createCommand,
  compare: compareCommand,
  convert: convertCommand,
};
