/**
 * One command set, QMP-shaped, that both front ends call: the CLI speaks it
 * as JSON lines over stdio, the worker exposes it to the page. Commands take
 * QMP's argument names and answer what QEMU answers, or throw a
 * CommandError carrying QMP's error class.
 */
import { FaultRules } from '../block/fault.js';
import { type FaultSide, formatFaultSpec, parseFaultSpec } from './fault-spec.js';
import { JobError } from './job-states.js';
import type { BlockJobInfo, MirrorJob } from './mirror-job.js';

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound';

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly qmpClass: QmpErrorClass,
    message: string,
  ) {
    super(message);
  }
}

export interface JobFaults {
  source: FaultRules;
  target: FaultRules;
}

/** query-jobs' JobInfo. */
export interface JobInfo {
  id: string;
  type: 'mirror';
  status: BlockJobInfo['status'];
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

interface Entry {
  job: MirrorJob;
  faults: JobFaults;
}

type Args = Record<string, unknown>;

function str(args: Args, name: string, required = true): string | undefined {
  const v = args[name];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw new CommandError('GenericError', `Parameter '${name}' is missing or not a string`);
  return v;
}

function int(args: Args, name: string, required = true): number | undefined {
  const v = args[name];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw new CommandError('GenericError', `Parameter '${name}' is missing or not an integer`);
  }
  return v;
}

function bool(args: Args, name: string): boolean | undefined {
  const v = args[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw new CommandError('GenericError', `Parameter '${name}' expects a boolean`);
  return v;
}

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

  /** Runs one command; the answer is what QMP's "return" would carry. */
  async execute(command: string, args: Args = {}): Promise<unknown> {
    try {
      return await this.dispatch(command, args ?? {});
    } catch (err) {
      if (err instanceof CommandError) throw err;
      if (err instanceof JobError) throw new CommandError(err.qmpClass, err.message);
      throw new CommandError('GenericError', err instanceof Error ? err.message : String(err));
    }
  }

  private byJobId(args: Args): Entry {
    const id = str(args, 'id')!;
    const entry = this.jobs.get(id);
    if (!entry) throw new CommandError('GenericError', 'Job not found');
    return entry;
  }

  private byDevice(args: Args): Entry {
    // Without a device, the only job will do (as a convenience for the CLI).
    const device = str(args, 'device', this.jobs.size !== 1);
    const entry = device === undefined ? [...this.jobs.values()][0] : this.jobs.get(device);
    if (!entry) throw new CommandError('DeviceNotActive', `Block job '${device}' not found`);
    return entry;
  }

  private async dispatch(command: string, args: Args): Promise<unknown> {
    switch (command) {
      case 'query-block-jobs':
        return this.list().filter((j) => j.status !== 'null').map((j) => j.query());
      case 'query-jobs':
        return this.list().map((j): JobInfo => {
          const q = j.query();
          const info: JobInfo = { id: j.id, type: 'mirror', status: q.status, 'current-progress': q.offset, 'total-progress': q.len };
          if (q.error) info.error = q.error;
          return info;
        });
      case 'job-pause':
        this.byJobId(args).job.pause();
        return {};
      case 'job-resume':
        this.byJobId(args).job.resume();
        return {};
      case 'job-cancel':
        this.byJobId(args).job.cancel(true);
        return {};
      case 'job-complete':
        this.byJobId(args).job.complete();
        return {};
      case 'job-finalize':
        this.byJobId(args).job.finalize();
        return {};
      case 'job-dismiss':
        this.byJobId(args).job.dismiss();
        return {};
      case 'block-job-pause':
        this.byDevice(args).job.pause();
        return {};
      case 'block-job-resume':
        this.byDevice(args).job.resume();
        return {};
      case 'block-job-cancel':
        this.byDevice(args).job.blockJobCancel(bool(args, 'force') ?? false);
        return {};
      case 'block-job-complete':
        this.byDevice(args).job.complete();
        return {};
      case 'block-job-set-speed':
        this.byDevice(args).job.setSpeed(int(args, 'speed')!);
        return {};
      case 'fault-add': {
        const entry = this.byDevice(args);
        const spec = parseFaultSpec(str(args, 'rule')!);
        entry.faults[spec.side].add(spec.rule);
        return { rule: formatFaultSpec(spec) };
      }
      case 'fault-list': {
        const entry = this.byDevice(args);
        // One numbering across both sides, source rules first: fault-remove takes it.
        const sides: FaultSide[] = ['source', 'target'];
        return sides
          .flatMap((side) => entry.faults[side].rules.map((rule) => ({ side, rule: formatFaultSpec({ side, rule }), hits: rule.hits })))
          .map((r, index) => ({ side: r.side, index, rule: r.rule, hits: r.hits }));
      }
      case 'fault-remove': {
        const entry = this.byDevice(args);
        if (bool(args, 'all')) {
          entry.faults.source.clear();
          entry.faults.target.clear();
          return {};
        }
        // The index as fault-list numbers the rules: source rules first.
        const index = int(args, 'index')!;
        const nbSource = entry.faults.source.rules.length;
        const removed = index < nbSource ? entry.faults.source.remove(index) : entry.faults.target.remove(index - nbSource);
        if (!removed) throw new CommandError('GenericError', `No fault rule at index ${index}`);
        return {};
      }
      case 'x-source-write': {
        const entry = this.byDevice(args);
        const offset = int(args, 'offset')!;
        const bytes = int(args, 'bytes')!;
        const pattern = int(args, 'pattern', false) ?? 0;
        if (pattern < 0 || pattern > 255) throw new CommandError('GenericError', `Parameter 'pattern' must be a byte value (0-255)`);
        if (bytes < 0 || bytes > 64 << 20) throw new CommandError('GenericError', `Parameter 'bytes' must be 0 to 64 MiB`);
        await entry.job.sourceWrite(offset, new Uint8Array(bytes).fill(pattern));
        return {};
      }
      default:
        throw new CommandError('CommandNotFound', `The command ${command} has not been found`);
    }
  }
}
