/**
 * The differential test's runner: plays a scenario on one side (QEMU 7.2 with
 * blkdebug, or `diskmirror mirror --qmp` with --inject and fault-add),
 * records every step's answer and every event, and runs both sides of a
 * scenario at once.
 */
import { spawn } from 'node:child_process';
import { BIN } from '../../helpers/cli.js';
import { qemuImg, qemuIo, run as runProgram, type tempDir } from '../../helpers/qemu.js';
import {
  type BlkdebugRule,
  type BlkdebugSetState,
  type BlockdevMirrorArgs,
  type Json,
  type QmpAnswer,
  type QmpEvent,
  QemuMirror,
  QmpPeer,
} from '../../helpers/qemu-mirror.js';
import { type Errno, type Fault, JOB, type Scenario, type Side, type Steps, type Unsettled } from './scenarios.js';

// ---- recording one side ----------------------------------------------------------------

interface Step {
  label: string;
  value: unknown;
}

export const SKIPPED = 'skipped: this diskmirror monitor (no QMP greeting) exits with its job';

export interface SideRun {
  side: 'qemu' | 'diskmirror';
  steps: Step[];
  events: QmpEvent[];
  marks: Map<string, number>;
  /** Set when a wait timed out or the monitor went away: the steps after it were not run. */
  abandoned: string | null;
  legacy: boolean;
  stderr: string;
  source: string;
  target: string;
  /** The target equals the source (qemu-img compare), once the side has stopped. */
  imagesEqual?: boolean;
}

class Abandon extends Error {}

/** One side, its job under way. */
interface Running {
  name: 'qemu' | 'diskmirror';
  peer: QmpPeer;
  /** diskmirror without a greeting: it exits once its job is gone. */
  legacy: boolean;
  guestWrite(offset: number, bytes: number, pattern: number): Promise<string | null>;
  armLateFaults(): Promise<void>;
  stop(): Promise<void>;
}

const WAIT_MS = 8000;
const SETTLE_MS = 3000;

/** The members compared: all but those unsettled here (QEMU's query-jobs calls offset current-progress, len total-progress). */
function compared(record: Json, unsettled: Unsettled): Json {
  const out: Json = {};
  for (const key of Object.keys(record).sort()) {
    if (unsettled.offset && (key === 'offset' || key === 'current-progress')) continue;
    if (unsettled.len && (key === 'len' || key === 'total-progress')) continue;
    if (unsettled.busy && key === 'busy') continue;
    out[key] = record[key];
  }
  return out;
}

function recorder(side: Running, out: SideRun): Steps {
  let cursor = 0; // events before this index have been waited past
  const { peer } = side;
  const jobGone = () => peer.events.some((e) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null');
  const record = (label: string, value: unknown) => out.steps.push({ label, value });
  /** Steps after the job are skipped on a monitor that exits with its job. */
  const skipped = (label: string) => {
    if (!(side.legacy && jobGone())) return false;
    record(label, SKIPPED);
    return true;
  };
  const abandonIfGone = (label: string, answer: QmpAnswer) => {
    if ('gone' in answer) throw new Abandon(`${label}: ${answer.gone}`);
  };
  const wait = async (label: string, test: (e: QmpEvent) => boolean, timeoutMs: number) => {
    const found = await peer.waitEvent(test, timeoutMs, cursor);
    if (!found) {
      const last = peer.events.filter((e) => e.event === 'JOB_STATUS_CHANGE').at(-1);
      const why = `${peer.gone ? 'the monitor exited' : `nothing in ${timeoutMs} ms`} (last status: ${String(last?.data.status ?? 'none')})`;
      record(label, `never came: ${why}`);
      throw new Abandon(`${label}: ${why}`);
    }
    cursor = peer.events.indexOf(found) + 1;
    record(label, 'came');
  };
  const queries = async (label: string): Promise<{ blockJobs: Json[]; jobs: Json[] }> => {
    const [blockJobs, jobs] = await Promise.all([peer.execute('query-block-jobs'), peer.execute('query-jobs')]);
    if (!('return' in blockJobs) || !('return' in jobs)) {
      record(label, { blockJobs, jobs });
      throw new Abandon(`${label}: no answer`);
    }
    return { blockJobs: blockJobs.return as Json[], jobs: jobs.return as Json[] };
  };
  const recordQueries = (label: string, q: { blockJobs: Json[]; jobs: Json[] }, unsettled: Unsettled) =>
    record(label, { 'query-block-jobs': q.blockJobs.map((j) => compared(j, unsettled)), 'query-jobs': q.jobs.map((j) => compared(j, unsettled)) });
  return {
    async cmd(command, args) {
      const label = `${command} ${JSON.stringify(args ?? {})}`;
      if (skipped(label)) return;
      const answer = await peer.execute(command, args);
      record(label, answer);
      abandonIfGone(label, answer);
    },
    async cmds(commands) {
      const label = commands.map(([c, a]) => `${c} ${JSON.stringify(a)}`).join(' + ');
      const answers = await peer.executeAll(commands);
      for (const [i, answer] of answers.entries()) record(`${label} [${i + 1}]`, 'gone' in answer && side.legacy && jobGone() ? SKIPPED : answer);
    },
    status: (status, timeoutMs = WAIT_MS) => wait(`wait for status ${status}`, (e) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === status, timeoutMs),
    event: (name, timeoutMs = WAIT_MS) => wait(`wait for ${name}`, (e) => e.event === name, timeoutMs),
    async events(name, count, timeoutMs = WAIT_MS) {
      let seen = 0;
      await wait(`wait for ${count} ${name}`, (e) => e.event === name && ++seen >= count, timeoutMs);
    },
    async query(label, unsettled = {}) {
      recordQueries(`queries (${label})`, await queries(`queries (${label})`), unsettled);
    },
    async settled(label) {
      const full = `queries once settled (${label})`;
      await new Promise((r) => setTimeout(r, 300));
      const until = performance.now() + SETTLE_MS;
      for (;;) {
        const q = await queries(full);
        const job = q.blockJobs[0];
        if (!job || (job.offset === job.len && job.busy === false) || performance.now() > until) {
          recordQueries(full, q, {});
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async idle() {
      const until = performance.now() + SETTLE_MS;
      while (performance.now() < until) {
        const job = (await queries('idle')).blockJobs[0];
        if (!job || job.busy === false) return;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async offsetFrozen(ms) {
      const before = await queries('offset');
      await new Promise((r) => setTimeout(r, ms));
      const after = await queries('offset');
      const offset = before.blockJobs[0]?.offset;
      record(`offset the same ${ms} ms later`, offset !== undefined && offset === after.blockJobs[0]?.offset);
    },
    async guestWrite(offset, bytes, pattern) {
      record(`guest writes ${bytes} bytes of ${pattern} at ${offset}`, (await side.guestWrite(offset, bytes, pattern)) ?? 'written');
    },
    armLateFaults: () => side.armLateFaults(),
    mark(name) {
      out.marks.set(name, peer.events.length);
    },
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  };
}

// ---- the two sides -----------------------------------------------------------------------

/** Where a run's images and sockets go. */
export type RunDir = ReturnType<typeof tempDir>;
let seq = 0;

/** The scenario's source, made by qemu-img and qemu-io (one pattern a write), and a blank target of the same size. */
async function makeImages(sc: Scenario, tag: string, dir: RunDir): Promise<{ source: string; target: string }> {
  const n = seq++;
  const source = dir.file(`${n}-${tag}-src.raw`);
  const target = dir.file(`${n}-${tag}-dst.raw`);
  await qemuImg('create', '-q', '-f', 'raw', source, String(sc.image.size));
  await qemuImg('create', '-q', '-f', 'raw', target, String(sc.image.size));
  const writes = sc.image.writes.map(([offset, bytes], i) => `write -P ${(0x11 * (i + 1)) & 0xff} ${offset} ${bytes}`);
  if (writes.length > 0) await qemuIo(source, writes, ['-f', 'raw']);
  return { source, target };
}

const ERRNO_NUMBER: Record<Errno, number> = { EIO: 5, ENOSPC: 28 };
/** The blkdebug event each kind of request raises (raw_co_preadv, raw_co_pwritev, bdrv_co_flush). */
const BLKDEBUG_EVENT = { read: 'read_aio', write: 'write_aio', flush: 'flush_to_disk' } as const;
/** Late faults wait in blkdebug state 2: the source enters it at its first write, the target at its first flush. */
const LATE_STATE: Record<Side, BlkdebugSetState> = {
  source: { event: 'write_aio', state: 1, new_state: 2 },
  target: { event: 'flush_to_disk', state: 1, new_state: 2 },
};

function blkdebugRules(faults: Fault[], side: Side): { inject: BlkdebugRule[]; setState: BlkdebugSetState[] } {
  const mine = faults.filter((f) => f.side === side);
  return {
    inject: mine.map((f) => ({
      event: BLKDEBUG_EVENT[f.op],
      errno: ERRNO_NUMBER[f.errno],
      // blkdebug's own request types: a flush rule has no sector, the others fail only their own kind.
      ...(f.op === 'flush' ? { iotype: 'flush' as const } : { sector: f.offset / 512, iotype: f.op }),
      once: f.once,
      ...(f.late ? { state: 2 } : {}),
    })),
    setState: mine.some((f) => f.late) ? [LATE_STATE[side]] : [],
  };
}

function faultSpec(f: Fault): string {
  return `${f.side}:${f.op}:${f.errno}:${f.offset}${f.once ? ':once' : ''}`;
}

async function startQemu(sc: Scenario, images: { source: string; target: string }, dir: RunDir): Promise<Running> {
  const qemu = await QemuMirror.start(dir.path);
  try {
    await qemu.addImage('src', images.source, blkdebugRules(sc.faults ?? [], 'source'));
    await qemu.addImage('dst', images.target, blkdebugRules(sc.faults ?? [], 'target'));
    if (sc.guest) await qemu.exportForGuest('src', `${images.source}.sock`);
    const o = sc.options;
    const args: BlockdevMirrorArgs = { 'job-id': JOB, device: 'src', target: 'dst', sync: o.sync ?? 'full' };
    if (o.speed !== undefined) args.speed = o.speed;
    if (o.granularity !== undefined) args.granularity = o.granularity;
    if (o.bufSize !== undefined) args['buf-size'] = o.bufSize;
    if (o.onSourceError !== undefined) args['on-source-error'] = o.onSourceError;
    if (o.onTargetError !== undefined) args['on-target-error'] = o.onTargetError;
    if (o.copyMode !== undefined) args['copy-mode'] = o.copyMode;
    const answer = await qemu.mirror(args);
    if (!('return' in answer)) throw new Error(`blockdev-mirror ${JSON.stringify(args)}: ${JSON.stringify(answer)}`);
  } catch (err) {
    await qemu.stop();
    throw err;
  }
  return {
    name: 'qemu',
    peer: qemu.qmp,
    legacy: false,
    guestWrite: (offset, bytes, pattern) => qemu.guestWrite(offset, bytes, pattern),
    armLateFaults: async () => {},
    stop: () => qemu.stop(),
  };
}

/** The diskmirror command line for a scenario (faults armed late are added by fault-add instead). */
export function diskmirrorArgs(sc: Scenario, images: { source: string; target: string }): string[] {
  const o = sc.options;
  const args = ['mirror', '--qmp', '--sync', o.sync ?? 'full'];
  if (o.speed !== undefined) args.push('--speed', String(o.speed));
  if (o.granularity !== undefined) args.push('--granularity', String(o.granularity));
  if (o.bufSize !== undefined) args.push('--buf-size', String(o.bufSize));
  if (o.onSourceError !== undefined) args.push('--on-source-error', o.onSourceError);
  if (o.onTargetError !== undefined) args.push('--on-target-error', o.onTargetError);
  if (o.copyMode !== undefined) args.push('--copy-mode', o.copyMode);
  for (const f of sc.faults ?? []) if (!f.late) args.push('--inject', faultSpec(f));
  args.push(images.source, images.target);
  return args;
}

async function startDiskmirror(sc: Scenario, images: { source: string; target: string }, dir: RunDir): Promise<Running> {
  const args = diskmirrorArgs(sc, images);
  const peer = new QmpPeer(spawn(process.execPath, [BIN, ...args], { cwd: dir.path, stdio: ['pipe', 'pipe', 'pipe'] }), 'diskmirror');
  const first = await peer.first;
  if (!first) throw new Error(`diskmirror ${args.join(' ')} exited before saying anything: ${peer.stderr}`);
  const legacy = !('QMP' in first);
  if (!legacy) {
    const answer = await peer.execute('qmp_capabilities');
    if (!('return' in answer)) throw new Error(`diskmirror: qmp_capabilities: ${JSON.stringify(answer)}`);
  }
  return {
    name: 'diskmirror',
    peer,
    legacy,
    async guestWrite(offset, bytes, pattern) {
      const answer = await peer.execute('x-source-write', { device: JOB, offset, bytes, pattern });
      return 'return' in answer ? null : JSON.stringify(answer);
    },
    async armLateFaults() {
      for (const f of sc.faults ?? []) {
        if (!f.late) continue;
        const answer = await peer.execute('fault-add', { device: JOB, rule: faultSpec(f) });
        if (!('return' in answer)) throw new Error(`fault-add ${faultSpec(f)}: ${JSON.stringify(answer)}`);
      }
    },
    stop: () => peer.close(),
  };
}

async function runSide(sc: Scenario, name: Running['name'], dir: RunDir): Promise<SideRun> {
  const images = await makeImages(sc, name, dir);
  const side = await (name === 'qemu' ? startQemu : startDiskmirror)(sc, images, dir);
  const out: SideRun = { side: name, steps: [], events: [], marks: new Map(), abandoned: null, legacy: side.legacy, stderr: '', ...images };
  try {
    await sc.steps(recorder(side, out));
  } catch (err) {
    if (!(err instanceof Abandon)) throw err;
    out.abandoned = err.message;
  } finally {
    // The events the scenario made, none of what stopping adds (QEMU's quit cancels a job left running).
    out.events = side.peer.events.slice();
    await side.stop();
    out.stderr = side.peer.stderr;
  }
  out.imagesEqual = (await runProgram('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', images.source, images.target])).code === 0;
  return out;
}

export interface Outcome {
  scenario: Scenario;
  qemu: SideRun;
  ours: SideRun;
  /** QEMU's target and diskmirror's hold the same bytes. */
  targetsEqual: boolean;
}

/** Runs a scenario on both sides at once, then compares the two targets. */
export async function runScenario(sc: Scenario, dir: RunDir): Promise<Outcome> {
  const [qemu, ours] = await Promise.all([runSide(sc, 'qemu', dir), runSide(sc, 'diskmirror', dir)]);
  const targetsEqual = (await runProgram('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', qemu.target, ours.target])).code === 0;
  return { scenario: sc, qemu, ours, targetsEqual };
}

/** Runs `tasks` with at most `limit` at a time. */
export async function pooled<T>(tasks: Array<() => Promise<T>>, limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}
