/**
 * A small argument parser for qemu-img-like commands: short (-f raw) and
 * long (--sync full, --sync=full) options, flags, repeatable options, and
 * positionals. Unknown options are errors that name the option.
 */

export interface OptionSpec {
  /** Long name without dashes, e.g. "sync"; also the key in the result. */
  name: string;
  short?: string;
  /** Takes a value (otherwise a flag). */
  value?: boolean;
  /**
   * A flag that may take a value: the next argument is its value when it
   * starts with one of these (e.g. `--qmp unix:/tmp/s`); `--name=value` too.
   */
  optionalValue?: readonly string[];
  repeat?: boolean;
}

export interface ParsedArgs {
  options: Record<string, string | string[] | boolean | undefined>;
  positionals: string[];
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseArgs(argv: string[], specs: OptionSpec[]): ParsedArgs {
  const byLong = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const options: ParsedArgs['options'] = {};
  const positionals: string[] = [];
  const set = (spec: OptionSpec, value: string | boolean) => {
    if (spec.repeat) {
      const list = (options[spec.name] as string[] | undefined) ?? [];
      list.push(String(value));
      options[spec.name] = list;
    } else {
      options[spec.name] = value;
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let spec: OptionSpec | undefined;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
      spec = byLong.get(name);
      if (!spec) throw new UsageError(`unknown option --${name}`);
    } else if (arg.startsWith('-') && arg.length > 1) {
      spec = byShort.get(arg.slice(1, 2));
      if (!spec) throw new UsageError(`unknown option ${arg.slice(0, 2)}`);
      if (arg.length > 2) inline = arg.slice(2);
    } else {
      positionals.push(arg);
      continue;
    }
    if (spec.optionalValue) {
      const next = argv[i + 1];
      if (inline !== undefined) set(spec, inline);
      else if (next !== undefined && spec.optionalValue.some((prefix) => next.startsWith(prefix))) set(spec, argv[++i]!);
      else set(spec, true);
    } else if (spec.value) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`option --${spec.name} needs a value`);
      set(spec, value);
    } else {
      if (inline !== undefined) throw new UsageError(`option --${spec.name} takes no value`);
      set(spec, true);
    }
  }
  return { options, positionals };
}
