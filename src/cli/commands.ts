/** The command table: each command names its usage, help text and runner. */
import type { Command } from './command.js';
import { infoCommand } from './cmd-info.js';
import { mirrorCommand } from './cmd-mirror.js';
import { checkCommand } from './cmd-check.js';
import { compareCommand } from './cmd-compare.js';
import { convertCommand } from './cmd-convert.js';
import { createCommand } from './cmd-create.js';
import { mapCommand } from './cmd-map.js';

export type { Command } from './command.js';

export const COMMANDS: Record<string, Command> = {
  info: infoCommand,
  mirror: mirrorCommand,
  check: checkCommand,
  map: mapCommand,
  create: createCommand,
  compare: compareCommand,
  convert: convertCommand,
};
