/**
 * QEMU 7.2 against `diskmirror mirror --qmp`: the same mirror scenarios run
 * in both, on images made here with qemu-img and qemu-io, with the same
 * faults (blkdebug `inject-error` rules on QEMU's side, `--inject` and
 * `fault-add` on ours), the same speed, granularity and buf-size, the same
 * guest writes (through an NBD export of QEMU's source node; `x-source-write`
 * on ours); then what each said is compared:
 *
 * - the events: names; JOB_STATUS_CHANGE statuses; BLOCK_JOB_ERROR device,
 *   operation and action; the READY, COMPLETED and CANCELLED data (the
 *   `error` text included), `offset` only where it is settled (not when a
 *   job is cancelled mid-copy under a speed limit: how far each got then is
 *   a matter of timing);
 * - every command's answer: `return`, or `error` with its class and desc;
 * - query-block-jobs and query-jobs at quiescent points: every field QEMU
 *   has, `offset` and `busy` only where they do not depend on timing;
 * - where QEMU's job completed: that the target equals the source, and
 *   that QEMU's target and diskmirror's are the same bytes.
 *
 * Any difference fails the scenario unless ALLOWED names it, with the
 * reason. Both sides of a scenario run at once; each waits for its own
 * events, so timing never decides the order of a step.
 *
 * diskmirror's monitor is driven as QEMU's is: greeting, qmp_capabilities,
 * commands; it keeps answering after its job has gone. A diskmirror that
 * opens without a greeting (the monitor before that protocol) is driven
 * anyway: the steps after its job has gone are skipped, and the report says
 * so.
 *
 * DIFF_VERBOSE=1 prints both transcripts of every scenario, passing or not.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, BIN } from '../helpers/cli.js';
import { qemuImg, qemuIo, requireQemu, run as runProgram, tempDir } from '../helpers/qemu.js';
import {
  type BlkdebugRule,
  type BlkdebugSetState,
  type BlockdevMirrorArgs,
  type Json,
  type QmpAnswer,
  type QmpEvent,
  QemuMirror,
  QmpPeer,
  requireQemuSystem,
} from '../helpers/qemu-mirror.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const JOB = 'mirror';

// ---- scenarios as data ----------------------------------------------------------------

type Policy = 'report' | 'ignore' | 'stop' | 'enospc' | 'auto';
type Errno = 'EIO' | 'ENOSPC';
type Side = 'source' | 'target';

/** One failing request: a source read, a target write (covering byte `offset`) or a target flush. */
interface Fault {
  side: Side;
  op: 'read' | 'write' | 'flush';
  errno: Errno;
  offset: number;
  once: boolean;
  /**
   * Armed only later: diskmirror gets it by fault-add when the scenario
   * says (armLateFaults); QEMU's blkdebug rule waits in state 2, which the
   * source enters at its first write (the guest's) and the target at its
   * first flush (the one before READY).
   */
  late?: boolean;
}

interface Options {
  sync?: 'full' | 'top' | 'none';
  copyMode?: 'background' | 'write-blocking';
  speed?: number;
  granularity?: number;
  bufSize?: number;
  onSourceError?: Policy;
  onTargetError?: Policy;
}

/** A raw source image: `size` bytes, data written by qemu-io at each [offset, bytes], the rest a hole. */
interface Image {
  size: number;
  writes: Array<[number, number]>;
}

interface Scenario {
  name: string;
  image: Image;
  options: Options;
  faults?: Fault[];
  /** A guest writes to the source during the job. */
  guest?: boolean;
  steps(s: Steps): Promise<void>;
  /** Allowed differences (keys of ALLOWED) that apply here. */
  allow?: AllowId[];
  /** QEMU may or may not meet the error again after the force cancel (see QEMU_NONDETERMINISM). */
  qemuMayRetryAfterForceCancel?: true;
  /** `offset` in the final COMPLETED / CANCELLED is not settled (cancelled mid-copy under a speed limit). */
  endOffsetUnsettled?: boolean;
}

/** Which query fields depend on timing at a point, and are left out there. */
interface Unsettled {
  offset?: boolean;
  busy?: boolean;
  len?: boolean;
}

/** What a scenario does on a side; every call but armLateFaults, mark and sleep is recorded as a step. */
interface Steps {
  cmd(command: string, args?: Json): Promise<void>;
  /** Commands back to back in one write, as a client pipelining them sends them. */
  cmds(commands: Array<[string, Json]>): Promise<void>;
  /** Waits for the next JOB_STATUS_CHANGE to `status` (after the last event waited for). */
  status(status: string, timeoutMs?: number): Promise<void>;
  /** Waits for the next event called `name`. */
  event(name: string, timeoutMs?: number): Promise<void>;
  /** Waits until at least `count` more events called `name` have arrived. */
  events(name: string, count: number, timeoutMs?: number): Promise<void>;
  /** query-block-jobs and query-jobs now, without the fields that depend on timing here. */
  query(label: string, unsettled?: Unsettled): Promise<void>;
  /**
   * query-block-jobs and query-jobs once the job has copied what there is
   * and is idle (offset = len, not busy). QEMU's job counts a guest write
   * into len only when it next runs (it sleeps 100 ms at a time once
   * READY): the first look is 300 ms after the call.
   */
  settled(label: string): Promise<void>;
  /** Records whether `offset` stays put for `ms` (a paused job's does). */
  offsetFrozen(ms: number): Promise<void>;
  /**
   * Waits (not recorded) until the job is not busy: sleeping for its speed
   * limit. QEMU enters a sleeping job at once when a verb comes, so what two
   * commands back to back do is then the same every time; a busy one (in
   * I/O) notices only later, and the outcome depends on the moment.
   */
  idle(): Promise<void>;
  /** A guest writes `bytes` bytes of `pattern` at `offset` to the source. */
  guestWrite(offset: number, bytes: number, pattern: number): Promise<void>;
  /** diskmirror: fault-add of the scenario's late faults (QEMU's are armed by blkdebug's state). */
  armLateFaults(): Promise<void>;
  /** Marks this point in the event stream (an allowance may refer to it). */
  mark(name: string): void;
  sleep(ms: number): Promise<void>;
}

const id = { id: JOB };
const device = { device: JOB };
const forced = { device: JOB, force: true };

const G64K = 64 * KiB;
/** Data in every MiB. */
const full = (size: number): Image => ({ size, writes: Array.from({ length: Math.ceil(size / MiB) }, (_, i) => [i * MiB, Math.min(MiB, size - i * MiB)]) });
const full2M = full(2 * MiB);
const full4M = full(4 * MiB);
/**
 * 4 MiB at 1 MiB/s: the job stays RUNNING for seconds in both. With one
 * 1 MiB buffer QEMU copies a 1 MiB burst each second (with 16 MiB it would
 * copy all 4 MiB at once and sleep), so neither has copied everything
 * early, and a pause that wakes QEMU from its sleep does not let it finish.
 */
const slow: Options = { speed: MiB, granularity: G64K, bufSize: MiB };
const plain: Options = { granularity: G64K };

const opOf = (side: Side): Fault['op'] => (side === 'source' ? 'read' : 'write');
const fault = (side: Side, errno: Errno, once = true): Fault => ({ side, op: opOf(side), errno, offset: MiB, once });
const onSide = (side: Side, policy: Policy, extra: Options = {}): Options => ({ ...plain, ...extra, [side === 'source' ? 'onSourceError' : 'onTargetError']: policy });
/** What blockjob.c's block_job_error_action does under `policy` with `errno`. */
const actionOf = (policy: Policy, errno: Errno): 'report' | 'ignore' | 'stop' => (policy === 'enospc' || policy === 'auto' ? (errno === 'ENOSPC' ? 'stop' : 'report') : policy);

/** The job's end: its events up to null, then the monitor after it (QEMU's answers: [] and "not found"). */
async function ends(s: Steps): Promise<void> {
  await s.status('null');
  await s.cmd('query-block-jobs');
  await s.cmd('query-jobs');
  await s.cmd('job-cancel', id);
  await s.cmd('block-job-cancel', device);
}

/** READY, then complete. */
async function readyThenComplete(s: Steps, verb: 'job-complete' | 'block-job-complete' = 'job-complete'): Promise<void> {
  await s.event('BLOCK_JOB_READY');
  await s.settled('at READY');
  await s.cmd(verb, verb === 'job-complete' ? id : device);
  await ends(s);
}

/** The report action: the job fails at once. */
async function fails(s: Steps): Promise<void> {
  await s.event('BLOCK_JOB_ERROR');
  await ends(s);
}

/** The stop action with a fault that fires once: PAUSED; verbs a stopped job refuses; resume; READY; complete. */
async function stopsThenResumes(s: Steps): Promise<void> {
  await s.status('paused');
  await s.query('stopped by the error');
  await s.cmd('job-complete', id);
  await s.cmd('block-job-cancel', device);
  // A stop counts as a user pause.
  await s.cmd('job-pause', id);
  await s.cmd('job-resume', id);
  await s.status('running');
  await readyThenComplete(s);
}

/** A stop, then a force cancel (iotests 229 and 248 end so). */
async function stopsThenForceCancel(s: Steps, status: 'paused' | 'standby' = 'paused'): Promise<void> {
  await s.status(status);
  await s.query('stopped by the error');
  s.mark('force-cancel');
  await s.cmd('block-job-cancel', forced);
  await ends(s);
}

function policyMatrix(): Scenario[] {
  const out: Scenario[] = [];
  for (const side of ['source', 'target'] as const) {
    for (const policy of ['report', 'ignore', 'stop', 'enospc', 'auto'] as const) {
      for (const errno of ['EIO', 'ENOSPC'] as const) {
        const action = actionOf(policy, errno);
        out.push({
          name: `${side} ${opOf(side)} ${errno} once, ${policy}: ${action === 'report' ? 'the job fails' : action === 'ignore' ? 'retried, READY, complete' : 'PAUSED, resume, complete'}`,
          image: full2M,
          options: onSide(side, policy),
          faults: [fault(side, errno)],
          steps: action === 'report' ? fails : action === 'ignore' ? (s) => readyThenComplete(s) : stopsThenResumes,
        });
      }
    }
  }
  return out;
}

const errorScenarios: Scenario[] = [
  ...(['source', 'target'] as const).map(
    (side): Scenario => ({
      name: `${side} ${opOf(side)} ENOSPC once, auto: PAUSED, force cancel`,
      image: full2M,
      options: onSide(side, 'auto'),
      faults: [fault(side, 'ENOSPC')],
      steps: (s) => stopsThenForceCancel(s),
      qemuMayRetryAfterForceCancel: true,
    }),
  ),
  ...(['source', 'target'] as const).map(
    (side): Scenario => ({
      name: `${side} ${opOf(side)} EIO always, ignore: retried without end, cancel`,
      image: full2M,
      options: onSide(side, 'ignore'),
      faults: [fault(side, 'EIO', false)],
      steps: async (s) => {
        await s.events('BLOCK_JOB_ERROR', 3);
        // QEMU's first MiB may still be in flight while the second fails again and again.
        await s.query('retrying', { offset: true, busy: true });
        await s.cmd('job-cancel', id);
        await ends(s);
      },
      allow: ['error-repeats-under-ignore'],
    }),
  ),
  {
    // iotest 229: a job paused by a persistent target error is force-cancelled.
    name: 'target write EIO always, stop: PAUSED, force cancel (229)',
    image: full2M,
    options: onSide('target', 'stop'),
    faults: [fault('target', 'EIO', false)],
    steps: (s) => stopsThenForceCancel(s),
    qemuMayRetryAfterForceCancel: true,
  },
  {
    // iotest 248: a full target pauses the job under enospc; resumed, it meets the error again.
    name: 'target write ENOSPC always, enospc: PAUSED, resume, PAUSED again, force cancel (248)',
    image: full2M,
    options: onSide('target', 'enospc'),
    faults: [fault('target', 'ENOSPC', false)],
    steps: async (s) => {
      await s.status('paused');
      await s.query('stopped by the error');
      await s.cmd('job-resume', id);
      await s.status('running');
      await stopsThenForceCancel(s);
    },
    qemuMayRetryAfterForceCancel: true,
  },
  {
    name: 'source read EIO always, stop: PAUSED, resume, PAUSED again, force cancel',
    image: full2M,
    options: onSide('source', 'stop'),
    faults: [fault('source', 'EIO', false)],
    steps: async (s) => {
      await s.status('paused');
      await s.query('stopped by the error');
      await s.cmd('job-resume', id);
      await s.status('running');
      await stopsThenForceCancel(s);
    },
    qemuMayRetryAfterForceCancel: true,
  },
  {
    name: 'granularity 8K, buf-size 64K, target write EIO once, ignore: retried, READY, complete',
    image: full4M,
    options: { granularity: 8 * KiB, bufSize: G64K, onTargetError: 'ignore' },
    faults: [fault('target', 'EIO')],
    steps: (s) => readyThenComplete(s),
  },
  {
    name: 'granularity 8K, buf-size 64K, source read EIO once, stop: PAUSED, resume, complete',
    image: full4M,
    options: { granularity: 8 * KiB, bufSize: G64K, onSourceError: 'stop' },
    faults: [fault('source', 'EIO')],
    steps: stopsThenResumes,
  },
  ...(['report', 'ignore'] as const).map(
    (policy): Scenario => ({
      name: `an unaligned image (1025 KiB), source read EIO once in its last KiB, ${policy}`,
      image: { size: 1025 * KiB, writes: [[0, 1025 * KiB]] },
      options: { onSourceError: policy },
      faults: [{ side: 'source', op: 'read', errno: 'EIO', offset: 1024 * KiB + 512, once: true }],
      steps: policy === 'report' ? fails : (s) => readyThenComplete(s),
    }),
  ),
  ...(['source', 'target'] as const).map(
    (side): Scenario => ({
      // One 1 MiB buffer for 8 MiB: the job must not stall after the ignored error.
      name: `${side} ${opOf(side)} EIO once, ignore, buf-size 1M, 8 MiB: retried, READY, complete`,
      image: full(8 * MiB),
      options: onSide(side, 'ignore', { bufSize: MiB }),
      faults: [fault(side, 'EIO')],
      steps: (s) => readyThenComplete(s),
    }),
  ),
  ...(['report', 'stop', 'ignore'] as const).map(
    (policy): Scenario => ({
      name: `target flush EIO once (the flush before READY), ${policy}`,
      image: full2M,
      options: onSide('target', policy),
      faults: [{ side: 'target', op: 'flush', errno: 'EIO', offset: 0, once: true }],
      steps: policy === 'report' ? fails : policy === 'stop' ? stopsThenResumes : (s) => readyThenComplete(s),
    }),
  ),
  {
    name: 'target flush ENOSPC once, enospc: PAUSED (nospace), resume, complete',
    image: full2M,
    options: onSide('target', 'enospc'),
    faults: [{ side: 'target', op: 'flush', errno: 'ENOSPC', offset: 0, once: true }],
    steps: stopsThenResumes,
  },
];

/** After READY: arm the late fault, a guest write over it, then what the policy does. */
const afterReady = (name: string, f: Omit<Fault, 'late' | 'offset' | 'once'>, policy: Policy, then: (s: Steps) => Promise<void>): Scenario => ({
  name: `after READY, a guest write, ${f.side} ${f.op} ${f.errno} once, ${policy}: ${name}`,
  image: full2M,
  options: onSide(f.side, policy),
  faults: [{ ...f, offset: MiB, once: true, late: true }],
  guest: true,
  steps: async (s) => {
    await s.event('BLOCK_JOB_READY');
    await s.armLateFaults();
    await s.guestWrite(MiB, G64K, 0x77);
    await then(s);
  },
});

const guestScenarios: Scenario[] = [
  afterReady('STANDBY (failed), resume, complete', { side: 'target', op: 'write', errno: 'EIO' }, 'stop', async (s) => {
    await s.event('BLOCK_JOB_ERROR');
    await s.status('standby');
    await s.query('stopped by the error');
    await s.cmd('job-resume', id);
    await s.status('ready');
    await s.settled('ready again');
    await s.cmd('job-complete', id);
    await ends(s);
  }),
  afterReady('STANDBY (nospace), force cancel', { side: 'target', op: 'write', errno: 'ENOSPC' }, 'enospc', async (s) => {
    await s.event('BLOCK_JOB_ERROR');
    await stopsThenForceCancel(s, 'standby');
  }),
  afterReady('the job fails after READY', { side: 'source', op: 'read', errno: 'EIO' }, 'report', fails),
  afterReady('stays READY, complete', { side: 'source', op: 'read', errno: 'EIO' }, 'ignore', async (s) => {
    await s.event('BLOCK_JOB_ERROR');
    await s.settled('retried');
    await s.cmd('job-complete', id);
    await ends(s);
  }),
  {
    // QEMU skips a flush when nothing was written since the last one: a guest write gives the completion something to flush.
    name: 'after READY, a guest write, target flush EIO once at completion, report',
    image: full2M,
    options: onSide('target', 'report'),
    faults: [{ side: 'target', op: 'flush', errno: 'EIO', offset: 0, once: true, late: true }],
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.armLateFaults();
      await s.guestWrite(MiB, G64K, 0x77);
      await s.settled('the write copied');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
  {
    name: 'after READY, a guest write, target flush EIO once at completion, stop',
    image: full2M,
    options: onSide('target', 'stop'),
    faults: [{ side: 'target', op: 'flush', errno: 'EIO', offset: 0, once: true, late: true }],
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.armLateFaults();
      await s.guestWrite(MiB, G64K, 0x77);
      await s.settled('the write copied');
      await s.cmd('job-complete', id);
      await s.event('BLOCK_JOB_ERROR');
      await s.status('standby');
      await s.query('stopped by the error');
      await s.cmd('job-resume', id);
      await ends(s);
    },
  },
  {
    name: 'guest writes while READY and in STANDBY are copied; complete',
    image: full2M,
    options: plain,
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.guestWrite(MiB, G64K, 0x77);
      await s.settled('the write copied');
      await s.cmd('job-pause', id);
      await s.status('standby');
      await s.guestWrite(0, 3 * G64K, 0x78);
      // QEMU counts the new dirty bytes into len only when the job runs again.
      await s.query('paused, a write waiting', { len: true });
      await s.cmd('job-resume', id);
      await s.status('ready');
      await s.settled('the second write copied');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
  {
    name: 'guest write while RUNNING under a speed limit; set-speed 0; complete',
    image: full4M,
    options: slow,
    guest: true,
    steps: async (s) => {
      await s.status('running');
      // Both have copied the first MiB by then: the write dirties it again, and len grows by it.
      await s.sleep(400);
      await s.guestWrite(0, G64K, 0x79);
      await s.cmd('block-job-set-speed', { ...device, speed: 0 });
      await readyThenComplete(s);
    },
  },
  {
    name: 'sync none: READY at once, only what the guest writes is copied',
    image: full2M,
    options: { ...plain, sync: 'none' },
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.settled('at READY');
      await s.guestWrite(MiB, 2 * G64K, 0x7a);
      await s.settled('the write copied');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
];

const moreGuestScenarios: Scenario[] = [
  afterReady('STANDBY (failed), resume, complete', { side: 'source', op: 'read', errno: 'EIO' }, 'stop', async (s) => {
    await s.event('BLOCK_JOB_ERROR');
    await s.status('standby');
    await s.query('stopped by the error');
    await s.cmd('job-resume', id);
    await s.status('ready');
    await s.settled('ready again');
    await s.cmd('job-complete', id);
    await ends(s);
  }),
  afterReady('STANDBY; job-complete there; resume: completes', { side: 'target', op: 'write', errno: 'EIO' }, 'stop', async (s) => {
    await s.event('BLOCK_JOB_ERROR');
    await s.status('standby');
    await s.cmd('job-complete', id);
    await s.query('stopped by the error, told to complete');
    await s.cmd('job-resume', id);
    await ends(s);
  }),
  {
    name: 'after READY, a guest write, then block-job-cancel: the write is copied, COMPLETED',
    image: full2M,
    options: plain,
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.guestWrite(MiB, 4 * G64K, 0x7b);
      await s.cmd('block-job-cancel', device);
      await ends(s);
    },
  },
  {
    name: 'copy-mode write-blocking: guest writes while READY, complete',
    image: full2M,
    options: { ...plain, copyMode: 'write-blocking' },
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.guestWrite(MiB, G64K, 0x7c);
      // Written to the target before the write returned: nothing left to copy.
      await s.query('right after the write');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
  {
    name: 'copy-mode write-blocking: after READY a guest write fails on the target (EIO once), stop: STANDBY, resume, complete',
    image: full2M,
    options: { ...onSide('target', 'stop'), copyMode: 'write-blocking' },
    faults: [{ side: 'target', op: 'write', errno: 'EIO', offset: MiB, once: true, late: true }],
    guest: true,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.armLateFaults();
      await s.guestWrite(MiB, G64K, 0x7d);
      await s.event('BLOCK_JOB_ERROR');
      await s.status('standby');
      await s.query('stopped by the error');
      await s.cmd('job-resume', id);
      await s.status('ready');
      await s.settled('ready again');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
];

const lifecycleScenarios: Scenario[] = [
  {
    name: 'pause and resume mid-copy under a speed limit; set-speed 0 while paused',
    image: full4M,
    options: slow,
    steps: async (s) => {
      await s.status('running');
      await s.sleep(300);
      // Sleeping on the speed limit: not busy.
      await s.query('running under a speed limit', { offset: true });
      await s.cmd('job-pause', id);
      await s.status('paused');
      await s.query('paused', { offset: true });
      await s.offsetFrozen(300);
      await s.cmd('block-job-set-speed', { ...device, speed: 0 });
      await s.cmd('job-resume', id);
      await s.status('running');
      await readyThenComplete(s);
    },
  },
  ...(['job-cancel', 'block-job-cancel', 'block-job-cancel force'] as const).map(
    (how): Scenario => ({
      name: `${how} before READY: CANCELLED`,
      image: full4M,
      options: slow,
      steps: async (s) => {
        await s.status('running');
        await s.sleep(200);
        await s.cmd(how === 'job-cancel' ? 'job-cancel' : 'block-job-cancel', how === 'job-cancel' ? id : how === 'block-job-cancel' ? device : forced);
        await ends(s);
      },
      endOffsetUnsettled: true,
    }),
  ),
  ...(['job-cancel', 'block-job-cancel', 'block-job-cancel force'] as const).map(
    (how): Scenario => ({
      name: `${how} after READY: ${how === 'block-job-cancel' ? 'COMPLETED without switch-over' : 'CANCELLED'}`,
      image: full2M,
      options: plain,
      steps: async (s) => {
        await s.event('BLOCK_JOB_READY');
        await s.cmd(how === 'job-cancel' ? 'job-cancel' : 'block-job-cancel', how === 'job-cancel' ? id : how === 'block-job-cancel' ? device : forced);
        await ends(s);
      },
    }),
  ),
  { name: 'job-complete after READY', image: full2M, options: plain, steps: (s) => readyThenComplete(s) },
  { name: 'block-job-complete after READY, default granularity and buf-size', image: full2M, options: {}, steps: (s) => readyThenComplete(s, 'block-job-complete') },
  { name: 'sync top on an image without a backing file: as full', image: full2M, options: { ...plain, sync: 'top' }, steps: (s) => readyThenComplete(s) },
  { name: 'a sparse source: zeroes written, complete', image: { size: 4 * MiB, writes: [[MiB, MiB]] }, options: plain, steps: (s) => readyThenComplete(s) },
  // iotest 041's general cases.
  { name: 'buf-size 4K (rounded up to the granularity): complete', image: full2M, options: { ...plain, bufSize: 4 * KiB }, steps: (s) => readyThenComplete(s) },
  { name: 'granularity 8K: complete', image: full2M, options: { granularity: 8 * KiB }, steps: (s) => readyThenComplete(s) },
  { name: 'an unaligned image (1025 KiB): complete', image: { size: 1025 * KiB, writes: [[0, 1025 * KiB]] }, options: {}, steps: (s) => readyThenComplete(s) },
  { name: 'a zero-length image: READY at once, complete', image: { size: 0, writes: [] }, options: {}, steps: (s) => readyThenComplete(s) },
  {
    name: 'standby: pause after READY, refused verbs, resume, complete',
    image: full2M,
    options: plain,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.cmd('job-pause', id);
      await s.status('standby');
      await s.query('standby');
      await s.cmd('job-pause', id);
      await s.cmd('block-job-pause', device);
      await s.cmd('block-job-cancel', device);
      await s.cmd('job-finalize', id);
      await s.cmd('block-job-set-speed', { ...device, speed: MiB });
      await s.cmd('job-resume', id);
      await s.status('ready');
      await s.settled('ready again');
      await s.cmd('job-resume', id);
      await s.cmd('block-job-resume', device);
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
  ...(['job-cancel', 'block-job-cancel force'] as const).map(
    (how): Scenario => ({
      name: `${how} in standby: CANCELLED`,
      image: full2M,
      options: plain,
      steps: async (s) => {
        await s.event('BLOCK_JOB_READY');
        await s.cmd('job-pause', id);
        await s.status('standby');
        await s.cmd(how === 'job-cancel' ? 'job-cancel' : 'block-job-cancel', how === 'job-cancel' ? id : forced);
        await ends(s);
      },
    }),
  ),
  {
    name: 'verbs in wrong states while RUNNING and PAUSED, then cancel',
    image: full4M,
    options: slow,
    steps: async (s) => {
      await s.status('running');
      await s.sleep(200);
      await s.cmd('job-complete', id);
      await s.cmd('block-job-complete', device);
      await s.cmd('job-resume', id);
      await s.cmd('block-job-resume', device);
      await s.cmd('job-finalize', id);
      await s.cmd('job-dismiss', id);
      await s.cmd('block-job-set-speed', { ...device, speed: -1 });
      await s.cmd('job-pause', { id: 'nope' });
      await s.cmd('block-job-pause', { device: 'nope' });
      await s.cmd('block-job-set-speed', { device: 'nope', speed: 0 });
      await s.cmd('job-pause', id);
      await s.cmd('job-pause', id);
      await s.status('paused');
      await s.cmd('block-job-cancel', device);
      await s.cmd('job-complete', id);
      await s.cmd('job-dismiss', id);
      await s.query('paused', { offset: true });
      await s.cmd('job-cancel', id);
      await ends(s);
    },
    endOffsetUnsettled: true,
  },
  {
    name: 'verbs in wrong states while READY',
    image: full2M,
    options: plain,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.cmd('qmp_capabilities');
      await s.cmd('no-such-command');
      await s.cmd('job-pause');
      await s.cmd('job-pause', { id: JOB, force: true });
      await s.cmd('block-job-set-speed', { device: JOB, speed: 'fast' });
      await s.cmd('job-resume', id);
      await s.cmd('job-finalize', id);
      await s.cmd('job-dismiss', id);
      await s.cmd('block-job-set-speed', { ...device, speed: 2 * MiB });
      await s.settled('ready, speed changed');
      await s.cmd('job-complete', id);
      await ends(s);
    },
  },
  {
    name: 'job-complete in standby, then job-resume and job-cancel back to back',
    image: full2M,
    options: plain,
    steps: async (s) => {
      await s.event('BLOCK_JOB_READY');
      await s.cmd('job-pause', id);
      await s.status('standby');
      await s.cmd('job-complete', id);
      await s.sleep(200);
      await s.query('standby, told to complete');
      await s.cmds([
        ['job-resume', id],
        ['job-cancel', id],
      ]);
      await ends(s);
    },
  },
];

/** Two commands back to back, after READY or while RUNNING, and what follows them. */
const pipelined = (phase: 'READY' | 'RUNNING', commands: Array<[string, Json]>, then: (s: Steps) => Promise<void> = ends): Scenario => ({
  name: `${phase}: ${commands.map(([c, a]) => `${c}${'force' in a ? ' force' : ''}`).join(' + ')} back to back`,
  image: phase === 'READY' ? full2M : full4M,
  options: phase === 'READY' ? plain : slow,
  steps: async (s) => {
    if (phase === 'READY') await s.event('BLOCK_JOB_READY');
    else {
      await s.status('running');
      await s.idle();
    }
    await s.cmds(commands);
    await then(s);
  },
  endOffsetUnsettled: phase === 'RUNNING',
});

const pipelineScenarios: Scenario[] = [
  pipelined('READY', [['job-complete', id], ['job-complete', id]]),
  pipelined('READY', [['job-complete', id], ['job-cancel', id]]),
  pipelined('READY', [['job-complete', id], ['block-job-cancel', device]]),
  pipelined('READY', [['job-cancel', id], ['job-complete', id]]),
  pipelined('READY', [['block-job-cancel', device], ['job-complete', id]]),
  pipelined('READY', [['block-job-cancel', device], ['block-job-cancel', forced]]),
  pipelined('READY', [['job-pause', id], ['job-cancel', id]]),
  pipelined('READY', [['job-pause', id], ['job-complete', id]], async (s) => {
    await s.status('standby');
    await s.query('standby, told to complete');
    await s.cmd('job-resume', id);
    await ends(s);
  }),
  pipelined('READY', [['job-pause', id], ['job-resume', id]], async (s) => {
    await s.sleep(200);
    await s.settled('ready');
    await s.cmd('job-complete', id);
    await ends(s);
  }),
  pipelined('READY', [['job-pause', id], ['block-job-cancel', device]], async (s) => {
    await s.status('standby');
    await s.query('standby');
    await s.cmd('job-cancel', id);
    await ends(s);
  }),
  // Not here: two verbs back to back while RUNNING (pause then resume, pause then cancel, cancel then
  // anything). Whether QEMU's job runs between the two depends on the machine's load: QEMU's monitor
  // dispatches commands from a coroutine, and the job it enters waits for that coroutine to yield, which it
  // may do only after both commands. Both outcomes were seen from QEMU here (with these scenarios running
  // side by side), so neither is QEMU's behaviour; diskmirror's job always runs between two commands.
  pipelined('RUNNING', [['block-job-set-speed', { ...device, speed: 0 }], ['job-complete', id]], (s) => readyThenComplete(s)),
];

const SCENARIOS: Scenario[] = [...policyMatrix(), ...errorScenarios, ...guestScenarios, ...moreGuestScenarios, ...lifecycleScenarios, ...pipelineScenarios];

// ---- what may differ, and why ----------------------------------------------------------

type AllowId = 'error-repeats-under-ignore';

interface RecordedEvent {
  /** Its index among all the side's events (marks are such indexes). */
  index: number;
  event: string;
  /** The members compared, keys sorted. */
  data: Json;
}

const eventText = (e: RecordedEvent) => `${e.event} ${JSON.stringify(e.data)}`;

interface Allowance {
  reason: string;
  /** Rewrites one side's events before they are compared. */
  apply(events: RecordedEvent[], marks: Map<string, number>, sc: Scenario): RecordedEvent[];
}

/** Allowed in every scenario: these BLOCK_JOB_ERROR members are not compared (QEMU has none of them). */
const EXTRA_ERROR_MEMBERS = {
  members: ['errno', 'offset', 'bytes', 'message'],
  reason:
    "diskmirror's BLOCK_JOB_ERROR adds errno, offset, bytes and message so a person can see which range failed and why (MIRROR-SEMANTICS.md, Events); QEMU's own members, device, operation and action, are compared",
};

const ALLOWED: Record<AllowId, Allowance> = {
  'error-repeats-under-ignore': {
    reason:
      'under ignore with a persistent error QEMU retries the range on every iteration with no delay (one BLOCK_JOB_ERROR each, thousands a second); diskmirror backs off per range (MIRROR-SEMANTICS.md, Error policy) and emits one per retry: a run of identical BLOCK_JOB_ERROR events counts as one, and each side must have at least one',
    apply: (events) => events.filter((e, i) => !(e.event === 'BLOCK_JOB_ERROR' && i > 0 && eventText(events[i - 1]!) === eventText(e))),
  },
};

/**
 * Not an allowance for diskmirror: what QEMU itself does differently from
 * run to run. These events are left out of QEMU's side only, so diskmirror
 * emitting them would still be a difference.
 */
const QEMU_NONDETERMINISM = {
  reason:
    'a force cancel resumes a job stopped by an error for a moment before it aborts, and in that moment QEMU may or may not meet the error again (iotest 229 filters these BLOCK_JOB_ERROR events out for that reason); diskmirror never issues I/O after a cancel',
  apply: (events: RecordedEvent[], marks: Map<string, number>): RecordedEvent[] => {
    const from = marks.get('force-cancel');
    return from === undefined ? events : events.filter((e) => e.index < from || e.event !== 'BLOCK_JOB_ERROR');
  },
};

// ---- recording one side ----------------------------------------------------------------

interface Step {
  label: string;
  value: unknown;
}

const SKIPPED = 'skipped: this diskmirror monitor (no QMP greeting) exits with its job';

interface SideRun {
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

let dir: ReturnType<typeof tempDir>;
let seq = 0;

/** The scenario's source, made by qemu-img and qemu-io (one pattern a write), and a blank target of the same size. */
async function makeImages(sc: Scenario, tag: string): Promise<{ source: string; target: string }> {
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

async function startQemu(sc: Scenario, images: { source: string; target: string }): Promise<Running> {
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
function diskmirrorArgs(sc: Scenario, images: { source: string; target: string }): string[] {
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

async function startDiskmirror(sc: Scenario, images: { source: string; target: string }): Promise<Running> {
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

async function runSide(sc: Scenario, name: Running['name']): Promise<SideRun> {
  const images = await makeImages(sc, name);
  const side = await (name === 'qemu' ? startQemu : startDiskmirror)(sc, images);
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

// ---- comparing -------------------------------------------------------------------------

interface Outcome {
  scenario: Scenario;
  qemu: SideRun;
  ours: SideRun;
  /** QEMU's target and diskmirror's hold the same bytes. */
  targetsEqual: boolean;
}

/** The event as compared. */
function comparedEvent(e: QmpEvent, index: number, endOffsetSettled: boolean): RecordedEvent {
  const data: Json = {};
  for (const key of Object.keys(e.data ?? {}).sort()) {
    if (e.event === 'BLOCK_JOB_ERROR' && EXTRA_ERROR_MEMBERS.members.includes(key)) continue;
    if (key === 'offset' && !endOffsetSettled && (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED')) continue;
    data[key] = e.data[key];
  }
  return { index, event: e.event, data };
}

function comparedEvents(sc: Scenario, r: SideRun): RecordedEvent[] {
  let events = r.events.map((e, i) => comparedEvent(e, i, !sc.endOffsetUnsettled));
  for (const allowId of sc.allow ?? []) events = ALLOWED[allowId].apply(events, r.marks, sc);
  if (r.side === 'qemu' && sc.qemuMayRetryAfterForceCancel) events = QEMU_NONDETERMINISM.apply(events, r.marks);
  return events;
}

const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
const completedWell = (r: SideRun) => r.events.some((e) => e.event === 'BLOCK_JOB_COMPLETED' && e.data.error === undefined);

/** Every difference no allowance covers, as lines for a person. */
function differences(o: Outcome): string[] {
  const out: string[] = [];
  const { scenario: sc, qemu, ours } = o;
  if (qemu.abandoned) out.push(`QEMU did not get through the scenario (${qemu.abandoned}): the scenario is wrong, not diskmirror`);
  for (let i = 0; i < Math.max(qemu.steps.length, ours.steps.length); i++) {
    const q = qemu.steps[i];
    const d = ours.steps[i];
    if (d?.value === SKIPPED) continue;
    if (q && d && q.label === d.label && JSON.stringify(q.value) === JSON.stringify(d.value)) continue;
    out.push(
      `step ${i + 1}, ${q?.label ?? d?.label}:\n      QEMU:       ${q ? show(q.value) : '(not reached)'}\n      diskmirror: ${d ? show(d.value) : `(not reached${ours.abandoned ? `: ${ours.abandoned}` : ''})`}`,
    );
    if (!q || !d || q.label !== d.label) break;
  }
  const qe = comparedEvents(sc, qemu).map(eventText);
  const de = comparedEvents(sc, ours).map(eventText);
  if (sc.allow?.includes('error-repeats-under-ignore')) {
    for (const [who, list] of [['QEMU', qe], ['diskmirror', de]] as const) {
      if (!list.some((t) => t.startsWith('BLOCK_JOB_ERROR'))) out.push(`${who} emitted no BLOCK_JOB_ERROR at all`);
    }
  }
  if (JSON.stringify(qe) !== JSON.stringify(de)) {
    const at = qe.findIndex((t, i) => t !== de[i]);
    const first = at === -1 ? qe.length : at;
    const list = (l: string[]) => l.slice(first, first + 6).join('\n                  ') || '(nothing more)';
    out.push(`events differ from #${first + 1}:\n      QEMU:       ${list(qe)}\n      diskmirror: ${list(de)}`);
  }
  // Where QEMU's job completed its target is a copy of the source: diskmirror's must be that copy too.
  if (completedWell(qemu)) {
    if (qemu.imagesEqual !== ours.imagesEqual) out.push(`target equals source afterwards: QEMU ${String(qemu.imagesEqual)}, diskmirror ${String(ours.imagesEqual)}`);
    if (!o.targetsEqual) out.push("QEMU's target and diskmirror's differ");
  }
  return out;
}

function report(o: Outcome, diffs: string[]): string {
  const events = (r: SideRun) =>
    comparedEvents(o.scenario, r)
      .map(eventText)
      .join('\n    ');
  const steps = (r: SideRun) => r.steps.map((s) => `${s.label} -> ${show(s.value)}`).join('\n    ');
  const skipped = o.ours.steps.filter((s) => s.value === SKIPPED).length;
  return [
    `${o.scenario.name}: ${diffs.length} difference(s)`,
    ...diffs.map((d) => `  - ${d}`),
    `  QEMU events:\n    ${events(o.qemu)}`,
    `  diskmirror events:\n    ${events(o.ours)}`,
    `  QEMU steps:\n    ${steps(o.qemu)}`,
    `  diskmirror steps:\n    ${steps(o.ours)}`,
    `  diskmirror ${diskmirrorArgs(o.scenario, { source: 'SRC', target: 'DST' }).join(' ')}`,
    o.ours.stderr.trim() ? `  diskmirror stderr: ${o.ours.stderr.trim()}` : '',
    skipped > 0 ? `  (diskmirror opened without a QMP greeting: ${skipped} step(s) after its job skipped)` : '',
  ]
    .filter(Boolean)
    .join('\n');
}

// ---- the run -------------------------------------------------------------------------------

/** Runs `tasks` with at most `limit` at a time. */
async function pooled<T>(tasks: Array<() => Promise<T>>, limit: number): Promise<T[]> {
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

/** Scenarios at once: each is two processes, mostly waiting; 2 cores are not saturated by 3. */
const CONCURRENT_SCENARIOS = 3;
const outcomes = new Map<string, Outcome | Error>();
/** Why nothing ran (QEMU or the build missing): every test fails with it, none is skipped. */
let setupError: Error | null = null;

beforeAll(async () => {
  try {
    requireQemuSystem();
    requireQemu();
    assertBuilt();
  } catch (err) {
    setupError = err instanceof Error ? err : new Error(String(err));
    return;
  }
  dir = tempDir('diskmirror-qemu-diff-');
  const runs = await pooled(
    SCENARIOS.map((sc) => async (): Promise<Outcome | Error> => {
      try {
        const [qemu, ours] = await Promise.all([runSide(sc, 'qemu'), runSide(sc, 'diskmirror')]);
        const targetsEqual = (await runProgram('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', qemu.target, ours.target])).code === 0;
        return { scenario: sc, qemu, ours, targetsEqual };
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
    }),
    CONCURRENT_SCENARIOS,
  );
  runs.forEach((r, i) => outcomes.set(SCENARIOS[i]!.name, r));
}, 150_000);

afterAll(() => dir?.remove());

describe('QEMU 7.2 blockdev-mirror and diskmirror mirror --qmp say the same', () => {
  it('QEMU, qemu-img, qemu-io and the built command are there', () => {
    if (setupError) throw setupError;
  });

  it('scenario names are unique, and every allowance says why', () => {
    expect(new Set(SCENARIOS.map((s) => s.name)).size).toBe(SCENARIOS.length);
    for (const a of [...Object.values(ALLOWED), EXTRA_ERROR_MEMBERS, QEMU_NONDETERMINISM]) expect(a.reason.length).toBeGreaterThan(40);
  });

  it.each(SCENARIOS.map((sc) => [sc.name]))('%s', (name) => {
    if (setupError) throw setupError;
    const o = outcomes.get(name);
    if (o instanceof Error) throw o;
    expect(o, 'the scenario ran').toBeDefined();
    const diffs = differences(o!);
    if (process.env.DIFF_VERBOSE) console.log(report(o!, diffs));
    expect(diffs, report(o!, diffs)).toEqual([]);
  });
});
