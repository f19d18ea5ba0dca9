/**
 * The one command set page and worker (and the CLI's QMP monitor) speak,
 * as data: each command's parameters in schema order (COMMAND_PARAMS,
 * checked by mirror/control.ts as QEMU's generated QAPI visitors check
 * them) and the answer it gives (CommandAnswers). `ArgsOf` and `AnswerOf`
 * type both ends, so a wrong command name, argument or answer is a compile
 * error, not a runtime surprise.
 */
import type { FaultSide } from './faults.js';
import type { JobStatus } from './job-states.js';
import type { IoStatus } from './policies.js';

/** QEMU's query-block-jobs fields. */
export interface BlockJobInfo {
  type: 'mirror';
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  'io-status': IoStatus;
  ready: boolean;
  status: JobStatus;
  'auto-finalize': boolean;
  'auto-dismiss': boolean;
  error?: string;
}

/** query-jobs' JobInfo. */
export interface JobInfo {
  id: string;
  type: 'mirror';
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

// ---- parameters as data ---------------------------------------------------------

/** QAPI's built-in types a parameter can have here, with the word QEMU's errors use for each. */
export const PARAM_TYPES = {
  str: { expected: 'string', accepts: (v: unknown) => typeof v === 'string' },
  // QAPI's int is int64; JSON numbers past 2^53 lose precision here, but still count as integers.
  int: { expected: 'integer', accepts: (v: unknown) => typeof v === 'number' && Number.isInteger(v) && Math.abs(v) < 2 ** 63 },
  bool: { expected: 'boolean', accepts: (v: unknown) => typeof v === 'boolean' },
  array: { expected: 'array', accepts: (v: unknown) => Array.isArray(v) },
} as const;

export type ParamType = keyof typeof PARAM_TYPES;

export interface ParamSpec {
  readonly name: string;
  readonly type: ParamType;
  readonly required: boolean;
}

const req = <N extends string, T extends ParamType>(name: N, type: T) => ({ name, type, required: true }) as const;
const opt = <N extends string, T extends ParamType>(name: N, type: T) => ({ name, type, required: false }) as const;

/**
 * Every command and its parameters, in schema order. QEMU's commands as
 * QEMU 7.2 declares them (qapi/control.json, qapi/block-core.json,
 * qapi/job.json); diskmirror's own (fault-*, x-source-write) take an
 * optional `device`: without it, the only job.
 */
export const COMMAND_PARAMS = {
  qmp_capabilities: [opt('enable', 'array')],
  'query-block-jobs': [],
  'query-jobs': [],
  'job-pause': [req('id', 'str')],
  'job-resume': [req('id', 'str')],
  'job-cancel': [req('id', 'str')],
  'job-complete': [req('id', 'str')],
  'job-finalize': [req('id', 'str')],
  'job-dismiss': [req('id', 'str')],
  'block-job-pause': [req('device', 'str')],
  'block-job-resume': [req('device', 'str')],
  'block-job-cancel': [req('device', 'str'), opt('force', 'bool')],
  'block-job-complete': [req('device', 'str')],
  'block-job-set-speed': [req('device', 'str'), req('speed', 'int')],
  'fault-add': [opt('device', 'str'), req('rule', 'str')],
  'fault-list': [opt('device', 'str')],
  'fault-remove': [opt('device', 'str'), opt('all', 'bool'), opt('index', 'int')],
  'x-source-write': [opt('device', 'str'), req('offset', 'int'), req('bytes', 'int'), opt('pattern', 'int')],
} as const satisfies Record<string, readonly ParamSpec[]>;

export type CommandName = keyof typeof COMMAND_PARAMS;

interface TypeOf {
  str: string;
  int: number;
  bool: boolean;
  array: unknown[];
}

type ParamsOf<C extends CommandName> = (typeof COMMAND_PARAMS)[C][number];

/** A command's arguments, typed from its row of the table: a parameter the schema makes optional may be left out. */
export type ArgsOf<C extends CommandName> = {
  [P in ParamsOf<C> as P['required'] extends true ? P['name'] : never]: TypeOf[P['type']];
} & {
  [P in ParamsOf<C> as P['required'] extends true ? never : P['name']]?: TypeOf[P['type']];
};

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(COMMAND_PARAMS, name);
}

/** A fault rule as fault-list lists it: one numbering across both sides, source rules first (fault-remove takes it). */
export interface ListedFault {
  side: FaultSide;
  index: number;
  rule: string;
  hits: number;
}

/** What a command answers (QMP's "return"); the empty object for a command that only acts. */
export interface CommandAnswers {
  qmp_capabilities: Record<string, never>;
  'query-block-jobs': BlockJobInfo[];
  'query-jobs': JobInfo[];
  'fault-add': { rule: string };
  'fault-list': ListedFault[];
}

export type AnswerOf<C extends CommandName> = C extends keyof CommandAnswers ? CommandAnswers[C] : Record<string, never>;

/** A command with its arguments, as one value (what a verb stands for). */
export type Call = { [C in CommandName]: { command: C; args: ArgsOf<C> } }[CommandName];
