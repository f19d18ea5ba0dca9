/** What a command of the diskmirror command line is: its usage, help text and runner. */
export interface Command {
  usage: string;
  help: string;
  run(argv: string[]): Promise<number>;
  /** Exit code for an error that is not a usage error (default 1). */
  errorExit?: number;
  /** Exit code for bad usage (default 2). */
  usageExit?: number;
}
