/**
 * A lesson's claims as checks on what its run showed (facts.ts). A lesson
 * grades a prediction only when its own checks hold: a run that did not
 * show what the lesson is about says so, with the figures, instead of
 * calling a prediction right or wrong.
 */
import { formatSize } from '../util/size.js';
import type { RunFacts } from './facts.js';

export interface LessonCheck {
  /** What the lesson claims its run shows, in words. */
  claim: string;
  holds(f: RunFacts): boolean;
  /** What the run showed, in words, whether or not the claim holds. */
  observed(f: RunFacts): string;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The job stays in `status` with `ioStatus` until the learner resumes it. */
export function staysPaused(status: 'paused' | 'standby', ioStatus: string): LessonCheck {
  const fits = (f: RunFacts) => f.pauses.find((p) => p.status === status && p.ioStatus === ioStatus && p.byLearner);
  return {
    claim: `the job stays ${status} with io-status ${ioStatus} until someone resumes it`,
    holds: (f) => fits(f) !== undefined,
    observed: (f) => {
      const p = fits(f) ?? f.pauses[0];
      if (!p) return `the job never paused (states: ${f.statuses.map((s) => s.status).join(', ')})`;
      return `${p.status} for ${seconds(p.ms)} with io-status ${p.ioStatus ?? 'unknown'}, ${p.byLearner ? 'until Resume was pressed' : 'resumed by the lesson itself'}`;
    },
  };
}

/** At least `min` BLOCK_JOB_ERRORs of this operation and action. */
export function errorsSeen(operation: 'read' | 'write', action: string, min: number, errno?: string): LessonCheck {
  const count = (f: RunFacts) => f.errors.filter((e) => e.operation === operation && e.action === action && (errno === undefined || e.errno === errno)).length;
  const what = `${operation}${errno ? `, ${errno}` : ''}, action ${action}`;
  return {
    claim: min === 1 ? `the failure is reported as BLOCK_JOB_ERROR (${what})` : `the failing range is tried again and again: at least ${min} BLOCK_JOB_ERROR (${what})`,
    holds: (f) => count(f) >= min,
    observed: (f) => `${count(f)} BLOCK_JOB_ERROR (${what})`,
  };
}

/** READY comes only once the lesson lifted its fault or stopped its guest. */
export function noReadyBeforeLift(cause: string): LessonCheck {
  return {
    claim: `no READY while ${cause}`,
    holds: (f) => f.liftedAtMs !== null && f.readyAtMs.length > 0 && f.readyAtMs.every((t) => t >= f.liftedAtMs!),
    observed: (f) => {
      if (f.liftedAtMs === null) return `${cause} never ended`;
      const before = f.readyAtMs.filter((t) => t < f.liftedAtMs!).length;
      if (before) return `READY came ${before} time(s) while ${cause}`;
      const first = f.readyAtMs[0];
      return first === undefined ? 'READY never came' : `no READY for ${seconds(f.liftedAtMs - (f.statuses[0]?.atMs ?? 0))} while ${cause}; READY ${seconds(first - f.liftedAtMs)} after it ended`;
    },
  };
}

export function endsAs(kind: 'completed' | 'failed' | 'cancelled', error?: string): LessonCheck {
  const words = { completed: 'completes (BLOCK_JOB_COMPLETED, no error)', failed: `fails (BLOCK_JOB_COMPLETED with "${error}")`, cancelled: 'is cancelled (BLOCK_JOB_CANCELLED)' }[kind];
  return {
    claim: `the job ${words}`,
    holds: (f) => f.ending?.kind === kind && (error === undefined || f.ending.error === error),
    observed: (f) => (f.ending ? `it ${f.ending.kind === 'failed' ? `failed: ${f.ending.error}` : f.ending.kind}` : 'it did not end'),
  };
}

export function targetEqualsSource(): LessonCheck {
  return {
    claim: 'the target holds what the source holds',
    holds: (f) => f.targetMatches === true,
    observed: (f) => (f.targetMatches === null ? 'the images were not compared' : f.targetMatches ? 'the target equals the source, byte for byte' : 'the target differs from the source'),
  };
}

/** A resumed job copies only what its checkpoint held dirty: less than the disk. */
export function resumeCopiesLess(): LessonCheck {
  return {
    claim: 'the resumed job copies only what was still dirty, less than the disk',
    holds: (f) => {
      const resumed = f.runs[1];
      return resumed !== undefined && resumed.firstLen !== null && resumed.firstLen < f.diskBytes && resumed.offset < f.diskBytes;
    },
    observed: (f) => {
      const resumed = f.runs[1];
      if (!resumed) return 'the job was not resumed';
      const clean = f.diskBytes - (resumed.firstLen ?? f.diskBytes);
      return `the resumed job copied ${formatSize(resumed.offset)} of ${formatSize(f.diskBytes)}: ${clean > 0 ? `the ${formatSize(clean)} already clean were not read again` : 'nothing had been called clean'}`;
    },
  };
}

/** A guest faster than the copy makes len pass the disk's size. */
export function lenPassesDisk(): LessonCheck {
  return {
    claim: "len grows past the disk's size while the guest rewrites it",
    holds: (f) => f.maxLen > f.diskBytes,
    observed: (f) => `len reached ${formatSize(f.maxLen)} on a ${formatSize(f.diskBytes)} disk`,
  };
}

export function readyWhileGuestWrites(): LessonCheck {
  return {
    claim: 'READY comes while the guest is still writing',
    holds: (f) => f.guestWroteAtReady,
    observed: (f) => (f.readyAtMs.length === 0 ? 'READY never came' : f.guestWroteAtReady ? 'READY came with the guest writing' : 'the guest had stopped before READY'),
  };
}

/** Each failed request covers a whole chunk of `granularity` bytes, though the fault is smaller. */
export function wholeChunks(granularity: number, faultBytes: number): LessonCheck {
  return {
    claim: `a ${formatSize(faultBytes)} fault fails the whole ${formatSize(granularity)} chunk, which is copied again whole`,
    holds: (f) => f.errors.length > 0 && f.errors.every((e) => e.bytes >= granularity),
    observed: (f) => (f.errors.length === 0 ? 'no request failed' : `the failed requests were ${[...new Set(f.errors.map((e) => formatSize(e.bytes)))].join(', ')} long`),
  };
}

export interface CheckResult {
  claim: string;
  holds: boolean;
  observed: string;
}

export function runChecks(checks: readonly LessonCheck[], facts: RunFacts): CheckResult[] {
  return checks.map((c) => ({ claim: c.claim, holds: c.holds(facts), observed: c.observed(facts) }));
}
