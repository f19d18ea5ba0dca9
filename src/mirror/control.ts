/**
 * One command set, QMP-shaped, that both front ends call: the CLI speaks it
 * as JSON lines over stdio, the worker exposes it to the page. Commands take
 * QMP's argument names and answer what QEMU answers, or throw a
 * CommandError carrying QMP's error class.
 *
 * Each command's parameters are data (COMMAND_PARAMS), checked by one
 * function (checkArguments) the way QEMU's generated QAPI visitors check
 * them: members in schema order (missing, then wrongly typed), then any
 * member the schema does not name. A refused command changes nothing.
 */
import { CommandError, type QmpErrorClass } from '../qapi/errors.js';
import { FaultRules } from '../block/fault.js';
import { type FaultFacts, type FaultSide, formatFaultSpec, parseFaultSpec } from '../qapi/faults.js';
import { JobError } from '../qapi/job-states.js';
import type { MirrorJob } from './mirror-job.js';
import { type AnswerOf, type ArgsOf, type CommandName, type JobInfo, type ListedFault, COMMAND_PARAMS, PARAM_TYPES, type ParamSpec, isCommandName } from '../qapi/commands.js';

export { CommandError, type QmpErrorClass };
export { type ArgsOf, type CommandName, type JobInfo, type ParamSpec, type ParamType, COMMAND_PARAMS, isCommandName } from '../qapi/commands.js';

export interface JobFaults {
  source: FaultRules;
  target: FaultRules;
}

/**
 * The fault rule behind an error a job met (its side by the operation): one
 * still armed over the range (Resume meets it again), else the one that
 * fired (a once rule, gone since); null when no rule was behind it.
 */
export function faultFacts(faults: JobFaults, error: { operation: 'read' | 'write'; offset: number; bytes: number }): FaultFacts | null {
  const side: FaultSide = error.operation === 'read' ? 'source' : 'target';
  const armed = faults[side].firing(error.operation, error.offset, error.bytes);
  const rule = armed ?? faults[side].firedFor(error.operation, error.offset, error.bytes);
  return rule ? { rule: formatFaultSpec({ side, rule }), armed: armed !== undefined } : null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const generic = (message: string) => new CommandError('GenericError', message);

/**
 * Checks `args` against the command's parameters as QEMU's QAPI input
 * visitor does, with QEMU's texts; returns them typed. Absent arguments
 * are an empty object, as in QMP.
 */
export function checkArguments<C extends CommandName>(command: C, args: unknown): ArgsOf<C> {
  const given = args === undefined ? {} : args;
  if (!isObject(given)) throw generic("QMP input member 'arguments' must be an object");
  const params: readonly ParamSpec[] = COMMAND_PARAMS[command];
  for (const param of params) {
    if (!Object.hasOwn(given, param.name)) {
      if (param.required) throw generic(`Parameter '${param.name}' is missing`);
      continue;
    }
    const type = PARAM_TYPES[param.type];
    if (!type.accepts(given[param.name])) throw generic(`Invalid parameter type for '${param.name}', expected: ${type.expected}`);
  }
  for (const name of Object.keys(given)) {
    if (!params.some((p) => p.name === name)) throw generic(`Parameter '${name}' is unexpected`);
  }
  return given as ArgsOf<C>;
}

/** A QMP request once it passed QEMU's checks (qmp_dispatch_check_obj). */
export interface QmpRequest {
  execute: string;
  arguments: Record<string, unknown>;
}

/**
 * Checks one JSON value read from a QMP client, member by member in the
 * order given, with QEMU's texts. `id` is allowed and left to the caller
 * (it comes back in the answer); `exec-oob` is refused, as by a monitor
 * without the oob capability.
 */
export function checkQmpRequest(value: unknown): QmpRequest {
  if (!isObject(value)) throw generic('QMP input must be a JSON object');
  let execute: string | undefined;
  for (const [name, member] of Object.entries(value)) {
    if (name === 'execute') {
      if (typeof member !== 'string') throw generic("QMP input member 'execute' must be a string");
      execute = member;
    } else if (name === 'arguments') {
      if (!isObject(member)) throw generic("QMP input member 'arguments' must be an object");
    } else if (name !== 'id') {
      throw generic(`QMP input member '${name}' is unexpected`);
    }
  }
  if (execute === undefined) throw generic("QMP input lacks member 'execute'");
  return { execute, arguments: (value.arguments as Record<string, unknown> | undefined) ?? {} };
}

// ---- the commands ---------------------------------------------------------------

interface Entry {
  job: MirrorJob;
  faults: JobFaults;
}

type Handlers = { [C in CommandName]: (args: ArgsOf<C>) => AnswerOf<C> | Promise<AnswerOf<C>> };

const X_SOURCE_WRITE_MAX_BYTES = 64 << 20;

export class MirrorControl {
  private readonly jobs = new Map<string, Entry>();

  add(job: MirrorJob, faults: JobFaults = { source: new FaultRules(), target: new FaultRules() }): void {
    if (this.jobs.has(job.id)) throw new CommandError('GenericError', `Job ID '${job.id}' already in use`);
    this.jobs.set(job.id, { job, faults });
    // A job that reached null is gone, as in QEMU.
    void job.result.then(() => this.jobs.delete(job.id));
  }

  get(id: string): MirrorJob | undefined {
    return this.jobs.get(id)?.job;
  }

  list(): MirrorJob[] {
    return [...this.jobs.values()].map((e) => e.job);
  }

  /**
   * Runs one command; the answer is what QMP's "return" would carry. An
   * unknown command is CommandNotFound before its arguments are looked at,
   * as in QEMU; arguments the table refuses run nothing.
   */
  async execute(command: string, args?: unknown): Promise<unknown> {
    if (!isCommandName(command)) throw new CommandError('CommandNotFound', `The command ${command} has not been found`);
    const checked = checkArguments(command, args);
    // QEMU's jobs run between two commands: what the last one asked for has happened before this one is looked at.
    await Promise.all(this.list().map((job) => job.settle()));
    try {
      return await (this.handlers[command] as (a: typeof checked) => unknown)(checked);
    } catch (err) {
      if (err instanceof CommandError) throw err;
      if (err instanceof JobError) throw new CommandError(err.qmpClass, err.message);
      throw new CommandError('GenericError', err instanceof Error ? err.message : String(err));
    }
  }

  /** A job that reached null is gone, as in QEMU, even before its last bookkeeping is done. */
  private live(id: string): Entry | undefined {
    const entry = this.jobs.get(id);
    return entry && entry.job.status !== 'null' ? entry : undefined;
  }

  private byJobId(id: string): Entry {
    const entry = this.live(id);
    if (!entry) throw new CommandError('GenericError', 'Job not found');
    return entry;
  }

  /** A block job by device; diskmirror's own commands may leave it out when there is one job. */
  private byDevice(device: string | undefined): Entry {
    const entry = device === undefined ? (this.jobs.size === 1 ? this.live([...this.jobs.keys()][0]!) : undefined) : this.live(device);
    if (entry) return entry;
    if (device === undefined) throw new CommandError('GenericError', "Parameter 'device' is missing");
    throw new CommandError('DeviceNotActive', `Block job '${device}' not found`);
  }

  private readonly handlers: Handlers = {
    qmp_capabilities: ({ enable }) => {
      // Each element must be a QMPCapability ('oob' is the only one), and this
      // monitor offers none (QEMU offers 'oob' only on a monitor with its own I/O thread).
      const caps = enable ?? [];
      caps.forEach((cap, i) => {
        if (typeof cap !== 'string') throw generic(`Invalid parameter type for 'enable[${i}]', expected: string`);
        if (cap !== 'oob') throw generic(`Parameter 'enable[${i}]' does not accept value '${cap}'`);
      });
      if (caps.length > 0) throw generic(`Capability '${String(caps[0])}' not available`);
      return {};
    },
    'query-block-jobs': () => this.list().filter((j) => j.status !== 'null').map((j) => j.query()),
    'query-jobs': () =>
      this.list().filter((j) => j.status !== 'null').map((j): JobInfo => {
        const q = j.query();
        const info: JobInfo = { id: j.id, type: 'mirror', status: q.status, 'current-progress': q.offset, 'total-progress': q.len };
        if (q.error) info.error = q.error;
        return info;
      }),
    'job-pause': ({ id }) => (this.byJobId(id).job.pause(), {}),
    'job-resume': ({ id }) => (this.byJobId(id).job.resume(), {}),
    'job-cancel': async ({ id }) => {
      await this.byJobId(id).job.completionSettled();
      this.byJobId(id).job.cancel(true);
      return {};
    },
    'job-complete': ({ id }) => (this.byJobId(id).job.complete(), {}),
    'job-finalize': ({ id }) => (this.byJobId(id).job.finalize(), {}),
    'job-dismiss': ({ id }) => (this.byJobId(id).job.dismiss(), {}),
    'block-job-pause': ({ device }) => (this.byDevice(device).job.pause(), {}),
    'block-job-resume': ({ device }) => (this.byDevice(device).job.resume(), {}),
    'block-job-cancel': async ({ device, force }) => {
      await this.byDevice(device).job.completionSettled();
      this.byDevice(device).job.blockJobCancel(force ?? false);
      return {};
    },
    'block-job-complete': ({ device }) => (this.byDevice(device).job.complete(), {}),
    'block-job-set-speed': ({ device, speed }) => (this.byDevice(device).job.setSpeed(speed), {}),
    'fault-add': ({ device, rule }) => {
      const entry = this.byDevice(device);
      const spec = parseFaultSpec(rule);
      entry.faults[spec.side].add(spec.rule);
      return { rule: formatFaultSpec(spec) };
    },
    'fault-list': ({ device }) => {
      const entry = this.byDevice(device);
      // One numbering across both sides, source rules first: fault-remove takes it.
      const sides: FaultSide[] = ['source', 'target'];
      return sides
        .flatMap((side) => entry.faults[side].rules.map((rule) => ({ side, rule: formatFaultSpec({ side, rule }), hits: rule.hits })))
        .map((r, index): ListedFault => ({ side: r.side, index, rule: r.rule, hits: r.hits }));
    },
    'fault-remove': ({ device, all, index }) => {
      const entry = this.byDevice(device);
      if (all) {
        entry.faults.source.clear();
        entry.faults.target.clear();
        return {};
      }
      if (index === undefined) throw generic("Parameter 'index' is missing");
      // The index as fault-list numbers the rules: source rules first.
      const nbSource = entry.faults.source.rules.length;
      const removed = index < nbSource ? entry.faults.source.remove(index) : entry.faults.target.remove(index - nbSource);
      if (!removed) throw generic(`No fault rule at index ${index}`);
      return {};
    },
    'x-source-write': async ({ device, offset, bytes, pattern = 0 }) => {
      const entry = this.byDevice(device);
      if (pattern < 0 || pattern > 255) throw generic(`Parameter 'pattern' must be a byte value (0-255)`);
      if (bytes < 0 || bytes > X_SOURCE_WRITE_MAX_BYTES) throw generic(`Parameter 'bytes' must be 0 to 64 MiB`);
      await entry.job.sourceWrite(offset, new Uint8Array(bytes).fill(pattern));
      return {};
    },
  };
}
