/**
 * Truth after a crash, by enumeration: a mirror runs with a guest writing
 * its source while every change to both files, and every checkpoint the
 * job stores, goes into one log (test/helpers/crash-disk.ts). Then, at
 * every k-th point of that log and in both crash models (a process kill, a
 * power loss), the disk is rebuilt as the crash would leave it; the job is
 * resumed from the checkpoint that survived, as the front ends resume it
 * (refused when the images changed since it, as their stamps tell), and
 * completed; the target must then hold exactly what the source holds after
 * the crash. No checkpoint at all: the mirror starts over.
 *
 * A checkpoint that calls a chunk clean is a promise that the target holds
 * what the source will hold after any crash from then on: this is that
 * promise, checked everywhere it could break.
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ImageConflictError } from '../../src/block/block-device.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { FaultRules } from '../../src/block/fault.js';
import { FaultImage } from '../../src/format/fault-image.js';
import type { FormatName, ImageFormat } from '../../src/format/image-format.js';
import { type ImageStamp, refuseChangedImages, stampImage } from '../../src/format/image-stamp.js';
import { createImage, openImage } from '../../src/format/open.js';
import { repairLeaks } from '../../src/format/repair.js';
import { checkImage } from '../../src/format/qcow2/check.js';
import { Qcow2Image } from '../../src/format/qcow2/image.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { type MirrorOptions, givenOptions } from '../../src/mirror/options.js';
import type { Checkpoint, Checkpointer } from '../../src/mirror/types.js';
import { type CrashLog as CrashLogType, type CrashModel, type CrashedFile, type Fates, CrashLog, crashedIdentity, lostOn, randomFates } from '../helpers/crash-disk.js';
import { equalBytes, isEvent, isStatus, waitForEvent } from '../helpers/images.js';
import { randInt, rng } from '../helpers/random.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;

/** What a front end stores at a checkpoint: the job's state and the stamps of its images. */
interface Stored {
  checkpoint: Checkpoint;
  source: ImageStamp;
  target: ImageStamp;
  /** The checkpoint was removed (the job ended): nothing to resume. */
  removed?: boolean;
  /** Marked before a guest wrote the source after it. */
  sourceWriting?: boolean;
}

interface GuestWrite {
  /** Issued once the log holds this many entries. */
  at: number;
  offset: number;
  bytes: number;
}

interface Scenario {
  name: string;
  format: FormatName;
  backing: boolean;
  size: number;
  options: MirrorOptions;
  guest: GuestWrite[];
  /** Faults armed from the start and lifted once the log holds `until` entries (or 400 ms have passed). */
  faults?: { source?: { errno: 'EIO' | 'ENOSPC'; offset: number; once: boolean }; target?: { errno: 'EIO' | 'ENOSPC'; offset: number; once: boolean }; until: number };
}

let kernel: Kernel;
beforeAll(async () => {
  kernel = await Kernel.create();
});

// ---- the images ------------------------------------------------------------------------

function fill(bytes: number, seed: number): Uint8Array {
  const next = rng(seed);
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4) {
    const v = Math.floor(next() * 2 ** 32);
    out[i] = v & 0xff;
    if (i + 1 < bytes) out[i + 1] = (v >>> 8) & 0xff;
    if (i + 2 < bytes) out[i + 2] = (v >>> 16) & 0xff;
    if (i + 3 < bytes) out[i + 3] = v >>> 24;
  }
  return out;
}

interface Bases {
  source: Uint8Array;
  target: Uint8Array;
  backing: Uint8Array | null;
  targetFormat: FormatName;
}

/** A backing file with data in most clusters, and the source: raw with holes, or qcow2 holding some clusters (over the backing file, or alone). */
async function makeBases(s: Scenario): Promise<Bases> {
  const next = rng(s.size + s.name.length);
  let backing: Uint8Array | null = null;
  if (s.backing) {
    const dev = new MemoryDevice(0);
    const img = await createImage(dev, { format: 'qcow2', size: s.size });
    for (let off = 0; off < s.size; off += CLUSTER) if (next() < 0.7) await img.write(off, fill(Math.min(CLUSTER, s.size - off), off + 1));
    await img.close();
    backing = dev.bytes();
  }
  const dev = new MemoryDevice(0);
  const img = await createImage(dev, { format: s.format, size: s.size, ...(s.backing ? { backingFile: 'backing.qcow2', backingFormat: 'qcow2' as const } : {}) }, resolverFor(backing));
  for (let off = 0; off < s.size; off += CLUSTER) if (next() < (s.backing ? 0.25 : 0.6)) await img.write(off, fill(Math.min(CLUSTER, s.size - off), off + 7));
  await img.close();
  const targetFormat = s.format;
  const tdev = new MemoryDevice(0);
  await (await createImage(tdev, { format: targetFormat, size: s.size })).close();
  return { source: dev.bytes(), target: tdev.bytes(), backing, targetFormat };
}

function resolverFor(backing: Uint8Array | null) {
  return {
    name: 'source.qcow2',
    resolve: async () => {
      if (!backing) throw new Error('no backing file here');
      return new MemoryDevice(backing, true);
    },
  };
}

async function readAll(image: ImageFormat): Promise<Uint8Array> {
  const out = new Uint8Array(image.size);
  for (let off = 0; off < image.size; off += MiB) await image.read(off, out.subarray(off, Math.min(image.size, off + MiB)));
  return out;
}


// ---- a recorded run --------------------------------------------------------------------

interface Recorded {
  log: CrashLogType<Stored>;
  bases: Bases;
  /** Log entries when the job concluded. */
  end: number;
}

/**
 * Runs the mirror with its guest, logging everything; the job completes and
 * the target equals the source. `resumed`: the job resumes from that stored
 * checkpoint (after an earlier crash), which the log holds from its start.
 */
async function record(s: Scenario, bases: Bases, resumed?: Stored): Promise<Recorded> {
  const log = new CrashLog<Stored>();
  const srcFile = log.file('source', bases.source);
  const tgtFile = log.file('target', bases.target);
  const source = await openImage(srcFile, { format: s.format, readOnly: false, ...resolverFor(bases.backing) });
  const target = await openImage(tgtFile, { format: bases.targetFormat, readOnly: false });
  if (resumed) {
    log.record(resumed);
    // As a launch does: leaks an interrupted job left are given back first.
    await repairLeaks(target);
  }
  const faults = { source: new FaultRules(), target: new FaultRules() };
  if (s.faults?.source) faults.source.add({ op: 'read', errno: s.faults.source.errno, offset: s.faults.source.offset, length: CLUSTER, once: s.faults.source.once });
  if (s.faults?.target) faults.target.add({ op: 'write', errno: s.faults.target.errno, offset: s.faults.target.offset, length: CLUSTER, once: s.faults.target.once });
  const stored: Stored[] = resumed ? [resumed] : [];
  const checkpointer: Checkpointer = {
    save: async (checkpoint) => {
      // As the front ends do: the images stamped after the job flushed them, then the record stored durably.
      const sourceStamp = await stampImage(source, 'source', await srcFile.identity(), { digest: true });
      const targetStamp = await stampImage(target, 'target', await tgtFile.identity(), { digest: false });
      const record: Stored = { checkpoint: { ...checkpoint, bitmap: checkpoint.bitmap.slice() }, source: sourceStamp, target: targetStamp };
      stored.push(record);
      log.record(record);
    },
    markSourceWriting: async () => {
      const last = stored.at(-1);
      if (last) {
        stored.push({ ...last, sourceWriting: true });
        log.record(stored.at(-1)!);
      }
    },
    remove: async () => {
      log.record({ removed: true } as Stored);
    },
  };
  const started = Date.now();
  const job = await MirrorJob.create({
    source: new FaultImage(source, faults.source),
    target: new FaultImage(target, faults.target),
    ...(resumed ? { options: givenOptions(resumed.checkpoint.options), resume: { bitmap: resumed.checkpoint.bitmap } } : { options: s.options, targetCreated: true }),
    kernel,
    checkpointer,
    // One entry of the log is a second: a checkpoint every 24 changes or flushes.
    checkpointIntervalSeconds: 24,
    now: () => log.length * 1000 + (Date.now() - started),
  });
  const writes: Promise<void>[] = [];
  let pending = [...s.guest].sort((a, b) => a.at - b.at);
  const lift = () => {
    faults.source.clear();
    faults.target.clear();
  };
  // Faults are lifted once the log is long enough, or after a while (a job retrying a failed range adds nothing to it).
  const lifting = setTimeout(lift, 400);
  log.watch((length) => {
    if (s.faults && length >= s.faults.until) lift();
    while (pending.length > 0 && pending[0]!.at <= length) {
      const w = pending.shift()!;
      writes.push(job.sourceWrite(w.offset, fill(w.bytes, w.offset ^ w.at)).catch(() => {}));
    }
  });
  // A stop pauses the job: it is resumed (the faults are lifted by then, or it meets them again).
  job.on((e) => {
    if (e.event === 'JOB_STATUS_CHANGE' && (e.data.status === 'paused' || e.data.status === 'standby')) {
      setTimeout(() => {
        lift();
        try {
          job.resume();
        } catch {
          // Not paused any more.
        }
      }, 1);
    }
  });
  job.start();
  await waitForEvent(job, isEvent('BLOCK_JOB_READY'), 60_000);
  // Writes due later are issued now, and the job catches up with them.
  while (pending.length > 0) {
    const w = pending.shift()!;
    writes.push(job.sourceWrite(w.offset, fill(w.bytes, w.offset ^ w.at)).catch(() => {}));
  }
  await Promise.all(writes);
  pending = [];
  job.complete();
  const result = await job.result;
  clearTimeout(lifting);
  expect(result.outcome, `recorded run: ${result.error ?? ''}`).toBe('completed');
  const end = log.length;
  expect(equalBytes(await readAll(target), await readAll(source)), 'recorded run: target equals source').toBe(true);
  await source.close();
  await target.close();
  return { log, bases, end };
}

// ---- after a crash ---------------------------------------------------------------------

type Outcome = 'identical' | 'refused' | 'started over';

/** Rebuilds the disk after a crash at `cut`, resumes from the surviving checkpoint and completes; throws if the target then differs. */
async function afterCrash(s: Scenario, rec: Recorded, cut: number, model: CrashModel, fates: Fates | undefined, seen: Map<string, Outcome>): Promise<Outcome> {
  const crash = rec.log.crash(cut, model, fates);
  const last = crash.records.at(-1);
  if (last?.removed) return 'identical';
  const src = crash.files.get('source')!;
  const tgt = crash.files.get('target')!;
  // Many crash points leave the same disk and checkpoint (a flush changes nothing a kill keeps; a power loss drops a run of writes): each is resumed once.
  const key = [crash.records.length, src.modified, tgt.modified, digest(src.bytes), digest(tgt.bytes)].join(':');
  const known = seen.get(key);
  if (known) return known;
  const outcome = await resumeAfter(s, rec, cut, crash.records.at(-1), src, tgt);
  seen.set(key, outcome);
  return outcome;
}

function digest(bytes: Uint8Array): string {
  return createHash('sha1').update(bytes).digest('hex');
}

async function resumeAfter(s: Scenario, rec: Recorded, cut: number, last: Stored | undefined, src: CrashedFile, tgt: CrashedFile): Promise<Outcome> {
  const source = await openImage(new MemoryDevice(src.bytes), { format: s.format, readOnly: true, ...resolverFor(rec.bases.backing) });
  const target = await openImage(new MemoryDevice(tgt.bytes), { format: rec.bases.targetFormat, readOnly: false });
  try {
    let outcome: Outcome = 'started over';
    let job: MirrorJob;
    if (!last) {
      // As a launch does with any existing target: leaks are given back first.
      await repairLeaks(target);
      job = await MirrorJob.create({ source, target, options: s.options, kernel });
    } else {
      try {
        refuseChangedImages(
          { source: [last.source], target: last.target, final: false, writesEndedMs: cut, sourceWriting: last.sourceWriting === true },
          {
            source: [await stampImage(source, 'source', crashedIdentity('source', src), { digest: true })],
            target: await stampImage(target, 'target', crashedIdentity('target', tgt), { digest: false }),
          },
          { source: 'source', target: 'target' },
          'start over',
        );
      } catch (err) {
        if (err instanceof ImageConflictError) return 'refused';
        throw err;
      }
      await repairLeaks(target);
      job = await MirrorJob.create({ source, target, options: givenOptions(last.checkpoint.options), resume: { bitmap: last.checkpoint.bitmap }, kernel });
      outcome = 'identical';
    }
    job.start();
    await waitForEvent(job, (e) => isEvent('BLOCK_JOB_READY')(e) || isStatus('concluded')(e), 60_000);
    if (job.ready) job.complete();
    const result = await job.result;
    if (result.outcome !== 'completed') throw new Error(`the resumed job ended ${result.outcome}: ${result.error ?? ''}`);
    const [a, b] = [await readAll(source), await readAll(target)];
    if (!equalBytes(a, b)) {
      let at = 0;
      while (a[at] === b[at]) at++;
      throw new Error(`${outcome === 'identical' ? 'resumed from a checkpoint' : 'started over'}: content mismatch at offset ${at}`);
    }
    // The finished copy checks clean: the crash's leaks were given back, the job added none.
    if (target instanceof Qcow2Image) {
      const check = await checkImage(target);
      if (check.leaks + check.corruptions + check.checkErrors > 0) throw new Error(`${outcome}: the finished target does not check clean: ${check.messages.join('; ')}`);
    }
    return outcome;
  } finally {
    await source.close();
    await target.close();
  }
}

/** A power loss three ways: everything unflushed lost; the source's lost and the target's kept; each change's fate drawn at random. */
const RUNS: { label: string; model: CrashModel; fates?: (cut: number) => Fates }[] = [
  { label: 'kill', model: 'kill' },
  { label: 'power, all lost', model: 'power' },
  { label: 'power, source lost', model: 'power', fates: () => lostOn('source') },
  { label: 'power, at random', model: 'power', fates: (cut) => randomFates(cut * 7919 + 1) },
];

/** Every crash point (every `step`-th entry) in both models; what failed, by crash point. */
async function enumerate(s: Scenario, rec: Recorded, step: number): Promise<{ failures: string[]; counts: Record<string, number> }> {
  const failures: string[] = [];
  const counts: Record<string, number> = {};
  const seen = new Map<string, Outcome>();
  for (let cut = 0; cut <= rec.end; cut += step) {
    for (const { label, model, fates } of RUNS) {
      try {
        const outcome = await afterCrash(s, rec, cut, model, fates?.(cut), seen);
        counts[`${label} ${outcome}`] = (counts[`${label} ${outcome}`] ?? 0) + 1;
      } catch (err) {
        failures.push(`${label} crash after entry ${cut} of ${rec.end}: ${(err as Error).message}`);
      }
    }
  }
  return { failures, counts };
}

// ---- the scenarios ---------------------------------------------------------------------

/**
 * A guest writing in bursts (`count` writes, one every `every` entries, from
 * each of `starts`), with quiet stretches between them in which the job
 * catches up and checkpoints: across cluster boundaries, often into clusters
 * an overlay does not hold yet.
 */
function guestBursts(seed: number, size: number, starts: number[], count: number, every: number): GuestWrite[] {
  const next = rng(seed);
  return starts.flatMap((start) =>
    Array.from({ length: count }, (_, i) => {
      const bytes = 512 * (1 + randInt(next, 200));
      const edge = randInt(next, size / CLUSTER) * CLUSTER + (next() < 0.5 ? -4096 : 0) - randInt(next, 4) * 512;
      return { at: start + i * every, offset: Math.max(0, Math.min(size - bytes, edge)), bytes };
    }),
  );
}

const SCENARIOS: Scenario[] = [
  {
    // The round a long soak found: a qcow2 overlay over a qcow2 backing file, enospc on the source, ignore on the target,
    // a guest write across two clusters the overlay did not hold, faults on both sides.
    name: 'qcow2 overlay over a backing file, enospc / ignore, faults on both sides',
    format: 'qcow2',
    backing: true,
    size: 4 * MiB,
    options: { sync: 'full', 'on-source-error': 'enospc', 'on-target-error': 'ignore' },
    guest: [{ at: 12, offset: 2339328, bytes: 73728 }, ...guestBursts(21, 4 * MiB, [20, 90, 170], 5, 4)],
    faults: { source: { errno: 'ENOSPC', offset: 3 * MiB, once: true }, target: { errno: 'EIO', offset: 1 * MiB, once: false }, until: 120 },
  },
  {
    name: 'qcow2 without a backing file',
    format: 'qcow2',
    backing: false,
    size: 3 * MiB,
    options: { sync: 'full' },
    guest: guestBursts(22, 3 * MiB, [15, 80, 150], 5, 4),
  },
  {
    name: 'raw',
    format: 'raw',
    backing: false,
    size: 6 * MiB,
    options: { sync: 'full', granularity: 64 * KiB },
    guest: guestBursts(23, 6 * MiB, [8, 40, 75], 4, 3),
  },
  {
    name: 'qcow2 overlay, write-blocking',
    format: 'qcow2',
    backing: true,
    size: 3 * MiB,
    options: { sync: 'full', 'copy-mode': 'write-blocking' },
    guest: guestBursts(24, 3 * MiB, [15, 80, 150], 5, 4),
  },
];

describe('a mirror resumed after a crash at any point converges on what the source holds', () => {
  for (const s of SCENARIOS) {
    it(s.name, async () => {
      const bases = await makeBases(s);
      const rec = await record(s, bases);
      expect(rec.log.entries.filter((e) => 'record' in e).length, 'checkpoints were taken').toBeGreaterThan(3);
      const step = Math.max(1, Math.floor(rec.end / 150));
      const { failures, counts } = await enumerate(s, rec, step);
      console.log(`${s.name}: ${rec.end} entries, every ${step}: ${JSON.stringify(counts)}`);
      expect(failures).toEqual([]);
      // The enumeration means something only if many crash points resumed, in every model.
      for (const { label } of RUNS) expect(counts[`${label} identical`] ?? 0, `${label}: resumed and identical`).toBeGreaterThan(8);
    }, 600_000);
  }

  it(`two kills: ${SCENARIOS[0]!.name}, killed, resumed with the guest writing and the faults armed again, killed again at every point`, async () => {
    const s = SCENARIOS[0]!;
    const bases = await makeBases(s);
    const first = await record(s, bases);
    // First kills that leave a resumable checkpoint, spread over the run.
    const resumable: number[] = [];
    for (let cut = 1; cut < first.end; cut++) {
      const crash = first.log.crash(cut, 'kill');
      const last = crash.records.at(-1);
      if (last && !last.removed && !last.sourceWriting && last.checkpoint.status !== 'ready') resumable.push(cut);
    }
    expect(resumable.length).toBeGreaterThan(3);
    const picks = [resumable[0]!, resumable[Math.floor(resumable.length / 2)]!, resumable.at(-1)!];
    const failures: string[] = [];
    let resumedAndIdentical = 0;
    for (const [n, cut] of picks.entries()) {
      const crash = first.log.crash(cut, 'kill');
      const second: Scenario = { ...s, guest: [{ at: 4, offset: 2339328 + CLUSTER, bytes: 73728 }, ...guestBursts(31 + n, s.size, [12, 70], 3, 4)] };
      const secondBases: Bases = { ...bases, source: crash.files.get('source')!.bytes, target: crash.files.get('target')!.bytes };
      const rec = await record(second, secondBases, crash.records.at(-1)!);
      const { failures: found, counts } = await enumerate(second, rec, Math.max(1, Math.floor(rec.end / 60)));
      failures.push(...found.map((f) => `first kill after entry ${cut}, then ${f}`));
      resumedAndIdentical += counts['kill identical'] ?? 0;
    }
    expect(failures).toEqual([]);
    expect(resumedAndIdentical).toBeGreaterThan(8);
  }, 600_000);
});
