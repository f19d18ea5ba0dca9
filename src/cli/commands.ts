/** The command table: each command names its usage, help text and runner. */
import { infoCommand } from './cmd-info.js';
import { mirrorCommand } from './cmd-mirror.js';

export interface Command {
  usage: string;
  help: string;
  run(argv: string[]): Promise<number>;
  /** Exit code for an error that is not a usage error (default 1). */
  errorExit?: number;
}

export const COMMANDS: Record<string, Command> = {
  info: infoCommand,
  mirror: mirrorCommand,
};
