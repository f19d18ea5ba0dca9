/**
 * diskmirror, the command: qemu-img-like, on the same engine as the app.
 * Errors are one line on stderr and a non-zero exit.
 */
import { UsageError } from './args.js';
import { version } from './version.js';
import { ImageConflictError } from '../block/block-device.js';
import { lockMechanisms } from '../block/node-lock.js';
import { COMMANDS, type Command } from './commands.js';
import { installNodeDeflate } from './node-deflate.js';

const USAGE = `usage: diskmirror COMMAND [options]

commands:
${Object.values(COMMANDS)
  .map((c: Command) => `  ${c.usage}`)
  .join('\n')}

Run "diskmirror COMMAND --help" for a command's options.

Images are locked while a command uses them, shared to read and exclusive to
write, with QEMU's own image locks where they can be taken: QEMU and
diskmirror refuse each other as QEMU refuses itself. A conflict is refused
(exit 1) naming the holder.
${lockMechanisms()}`;

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  installNodeDeflate();
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    console.log(`diskmirror ${version()}`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`diskmirror: unknown command '${name}'\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: diskmirror ${command.usage}\n\n${command.help}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    console.error(`diskmirror ${name}: ${message}`);
    // An image refused because it is in use or is the other side: exit 1, as qemu-img.
    if (err instanceof ImageConflictError) return 1;
    return err instanceof UsageError ? (command.usageExit ?? 2) : (command.errorExit ?? 1);
  }
}
