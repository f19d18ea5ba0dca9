/**
 * The mirror job against a model of QEMU's job rules, found by fast-check:
 * random verbs at random moments of a real job (copying, paused, READY,
 * completing, cancelled, waiting to be finalized or dismissed). Each verb is
 * refused exactly when the verb table and QEMU's extra rules say; every
 * status change is one of the transition table's; the events come in QEMU's
 * order with exactly one ending; and a job that completed left the target
 * equal to the source.
 */
import fc from 'fast-check';
import { runs } from './runs.js';
import { describe, expect, it } from 'vitest';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import { JobError, type JobStatus, canTransition, verbAllowed } from '../../src/qapi/job-states.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { blankRaw, equalBytes, memoryRaw } from '../helpers/images.js';

const MiB = 1 << 20;

type Verb = 'pause' | 'resume' | 'cancel' | 'soft-cancel' | 'complete' | 'set-speed' | 'finalize' | 'dismiss';
interface Step {
  verb: Verb;
  /** Milliseconds to let the job run before the verb. */
  wait: number;
  speed: number;
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  verb: fc.constantFrom<Verb>('pause', 'resume', 'cancel', 'soft-cancel', 'complete', 'set-speed', 'finalize', 'dismiss', 'resume', 'complete'),
  wait: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 100, max: 250 })),
  speed: fc.constantFrom(0, 4 * MiB, 16 * MiB, 64 * MiB),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What QEMU answers to `verb` in `status`, with the job's own flags. */
function modelAllows(verb: Verb, status: JobStatus, m: { userPaused: boolean; cancelRequested: boolean }): boolean {
  switch (verb) {
    case 'pause':
      return verbAllowed('pause', status) && !m.userPaused;
    case 'resume':
      return m.userPaused && verbAllowed('resume', status);
    case 'cancel':
      return verbAllowed('cancel', status);
    case 'soft-cancel':
      return verbAllowed('cancel', status) && !m.userPaused;
    case 'complete':
      return verbAllowed('complete', status) && !m.cancelRequested;
    case 'set-speed':
      return verbAllowed('set-speed', status);
    case 'finalize':
      return verbAllowed('finalize', status);
    case 'dismiss':
      return verbAllowed('dismiss', status);
  }
}

function apply(job: MirrorJob, s: Step): void {
  if (s.verb === 'pause') job.pause();
  else if (s.verb === 'resume') job.resume();
  else if (s.verb === 'cancel') job.blockJobCancel(true);
  else if (s.verb === 'soft-cancel') job.blockJobCancel(false);
  else if (s.verb === 'complete') job.complete();
  else if (s.verb === 'set-speed') job.setSpeed(s.speed);
  else if (s.verb === 'finalize') job.finalize();
  else job.dismiss();
}

/** QEMU's order: a READY event right after the ready status, one ending event, then concluded (and null once dismissed). */
function checkEvents(events: AnyQmpEvent[], autoDismiss: boolean): void {
  let status: JobStatus = 'undefined';
  let endings = 0;
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    if (e.event === 'JOB_STATUS_CHANGE') {
      const next = e.data.status as JobStatus;
      expect(canTransition(status, next), `status ${status} -> ${next} (event ${i})`).toBe(true);
      status = next;
    } else if (e.event === 'BLOCK_JOB_READY') {
      expect(status, 'BLOCK_JOB_READY follows the ready status').toBe('ready');
      expect(events[i - 1]).toMatchObject({ event: 'JOB_STATUS_CHANGE', data: { status: 'ready' } });
    } else if (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED') {
      endings++;
      expect(['pending', 'aborting'], `${e.event} in ${status}`).toContain(status);
    } else if (e.event === 'BLOCK_JOB_PENDING') {
      expect(status).toBe('pending');
    }
  }
  expect(endings, 'exactly one BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED').toBe(1);
  expect(status).toBe(autoDismiss ? 'null' : 'concluded');
}

describe('the mirror job against its model (fast-check)', () => {
  it('refuses a verb exactly when QEMU would, moves only along the transition table, ends once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 14 }), fc.boolean(), fc.boolean(), async (steps, autoFinalize, autoDismiss) => {
        const src = memoryRaw(2 * MiB + 4096, 7);
        const dst = blankRaw(2 * MiB + 4096);
        const job = await MirrorJob.create({
          source: src.image,
          target: dst.image,
          options: { sync: 'full', speed: 16 * MiB, 'buf-size': 256 * 1024, 'auto-finalize': autoFinalize, 'auto-dismiss': autoDismiss },
          targetCreated: true,
        });
        const events: AnyQmpEvent[] = [];
        job.on((e) => events.push(e), { replay: true });
        const model = { userPaused: false, cancelRequested: false };
        job.start();
        for (const s of steps) {
          if (s.wait) await sleep(s.wait);
          const status = job.status;
          const expected = modelAllows(s.verb, status, model);
          let refused: unknown = null;
          try {
            apply(job, s);
          } catch (err) {
            refused = err;
          }
          if (refused && !(refused instanceof JobError)) throw refused;
          expect(refused === null, `${s.verb} in ${status} (paused by user: ${model.userPaused}, cancelled: ${model.cancelRequested})`).toBe(expected);
          if (refused) continue;
          if (s.verb === 'pause') model.userPaused = true;
          if (s.verb === 'resume') model.userPaused = false;
          // QEMU: any accepted cancel marks the job cancelled (a later complete is refused) and ends a user's pause.
          if (s.verb === 'cancel' || s.verb === 'soft-cancel') {
            model.cancelRequested = true;
            model.userPaused = false;
          }
        }
        // Wind down as a person would: resume, speed up, complete, finalize, dismiss.
        const deadline = Date.now() + 15_000;
        while (job.status !== 'null') {
          if (Date.now() > deadline) throw new Error(`the job did not end (status ${job.status})`);
          const st = job.status;
          if (model.userPaused && verbAllowed('resume', st)) {
            job.resume();
            model.userPaused = false;
          }
          if (verbAllowed('set-speed', st)) job.setSpeed(0);
          if (verbAllowed('complete', st) && !model.cancelRequested) job.complete();
          if (st === 'pending' && !autoFinalize) job.finalize();
          if (st === 'concluded' && !autoDismiss) job.dismiss();
          await sleep(5);
        }
        await job.result;
        const result = await job.result;
        checkEvents(events, true);
        if (result.outcome === 'completed') expect(equalBytes(dst.device.bytes(), src.device.bytes()), 'a completed job left the target equal').toBe(true);
      }),
      { numRuns: runs(60) },
    );
  });
});
