/**
 * The policy matrix: side x policy x error, each with the outcome QEMU's
 * block_job_error_action gives, and the rule that a failed range is never
 * lost: whatever happened, once the fault is gone the images end up equal.
 */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { ErrorPolicy } from '../../src/mirror/error-policy.js';
import type { FaultRule } from '../../src/block/fault.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isStatus, isEvent, equalBytes } from '../helpers/images.js';

const MiB = 1 << 20;

type Fault = 'EIO once' | 'EIO persistent' | 'ENOSPC once';
type Expect = 'fails' | 'completes' | 'pauses then completes' | 'retries forever' | 'pauses again';

/** What QEMU does, written out case by case (not computed by the code under test). */
const EXPECTED: Record<ErrorPolicy, Record<Fault, Expect>> = {
  report: { 'EIO once': 'fails', 'EIO persistent': 'fails', 'ENOSPC once': 'fails' },
  ignore: { 'EIO once': 'completes', 'EIO persistent': 'retries forever', 'ENOSPC once': 'completes' },
  stop: { 'EIO once': 'pauses then completes', 'EIO persistent': 'pauses again', 'ENOSPC once': 'pauses then completes' },
  enospc: { 'EIO once': 'fails', 'EIO persistent': 'fails', 'ENOSPC once': 'pauses then completes' },
  auto: { 'EIO once': 'fails', 'EIO persistent': 'fails', 'ENOSPC once': 'pauses then completes' },
};

function rule(side: 'source' | 'target', fault: Fault): FaultRule {
  return {
    op: side === 'source' ? 'read' : 'write',
    errno: fault.startsWith('ENOSPC') ? 'ENOSPC' : 'EIO',
    offset: MiB + 4096,
    length: 1,
    once: fault.endsWith('once'),
  };
}

describe('policy matrix', () => {
  for (const side of ['source', 'target'] as const) {
    for (const policy of Object.keys(EXPECTED) as ErrorPolicy[]) {
      for (const fault of Object.keys(EXPECTED[policy]) as Fault[]) {
        const expected = EXPECTED[policy][fault];
        it(`${side}, ${policy}, ${fault}: ${expected}`, async () => {
          const src = memoryRaw(3 * MiB, 11, false);
          const dst = blankRaw(3 * MiB);
          const source = new FaultImage(src.image);
          const target = new FaultImage(dst.image);
          (side === 'source' ? source : target).faults.add(rule(side, fault));
          const job = await MirrorJob.create({
            source,
            target,
            targetCreated: true,
            options: { sync: 'full', id: 'm', [side === 'source' ? 'on-source-error' : 'on-target-error']: policy },
          });
          const rec = recordEvents(job);
          const errors = () => rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR');
          const equal = () => equalBytes(dst.device.bytes(), src.device.bytes());
          const operation = side === 'source' ? 'read' : 'write';
          job.start();

          if (expected === 'fails') {
            const r = await job.result;
            expect(r.outcome).toBe('failed');
            expect(r.errno).toBe(rule(side, fault).errno);
            expect(errors()[0]!.data).toMatchObject({ operation, action: 'report' });
            expect(rec.names()).not.toContain('BLOCK_JOB_READY');
            return;
          }
          if (expected === 'completes') {
            await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
            job.complete();
            expect((await job.result).outcome).toBe('completed');
            expect(errors().map((e) => (e.data as { action: string }).action)).toEqual(['ignore']);
            expect(equal()).toBe(true);
            return;
          }
          if (expected === 'retries forever') {
            // Keeps running and reporting, never READY; the range stays dirty.
            while (errors().length < 4) await waitForEvent(job, isEvent('BLOCK_JOB_ERROR'));
            expect(job.status).toBe('running');
            expect(job.ready).toBe(false);
            expect(job.query().len - job.query().offset).toBeGreaterThan(0);
            expect(job.stats().failed[0]).toMatchObject({ side, errno: 'EIO' });
            // Lift the fault: the range was never lost, the job converges.
            (side === 'source' ? source : target).faults.clear();
            await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
            job.complete();
            expect((await job.result).outcome).toBe('completed');
            expect(equal()).toBe(true);
            expect(job.stats().failed).toEqual([]);
            return;
          }
          // stop, one way or another
          await waitForEvent(job, isStatus('paused'));
          const ioStatus = fault.startsWith('ENOSPC') ? 'nospace' : 'failed';
          expect(job.query()).toMatchObject({ status: 'paused', 'io-status': ioStatus, paused: true });
          expect(errors()[0]!.data).toMatchObject({ operation, action: 'stop' });
          if (expected === 'pauses again') {
            job.resume();
            await waitForEvent(job, isStatus('paused'));
            expect(job.query()['io-status']).toBe('failed');
            expect(errors().length).toBeGreaterThanOrEqual(2);
            (side === 'source' ? source : target).faults.clear();
          }
          job.resume();
          await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
          job.complete();
          expect((await job.result).outcome).toBe('completed');
          expect(equal()).toBe(true);
        });
      }
    }
  }
});

describe('ignore backs off', () => {
  it('a persistent error is retried with growing gaps, not in a hot loop', async () => {
    const src = memoryRaw(2 * MiB, 4, false);
    const source = new FaultImage(src.image);
    source.faults.add({ op: 'read', errno: 'EIO', offset: MiB, length: 1, once: false });
    const job = await MirrorJob.create({ source, target: blankRaw(2 * MiB).image, targetCreated: true, options: { sync: 'full', 'on-source-error': 'ignore' } });
    const rec = recordEvents(job);
    job.start();
    await new Promise((r) => setTimeout(r, 600));
    const times = rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').map((e) => e.timestamp.seconds * 1e3 + e.timestamp.microseconds / 1e3);
    // 10, 20, 40, 80, 160, 320 ms... at most ~7 tries in 600 ms, at least 4.
    expect(times.length).toBeGreaterThanOrEqual(4);
    expect(times.length).toBeLessThanOrEqual(9);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.at(-1)!).toBeGreaterThan(gaps[0]!);
    job.cancel();
    await job.result;
  });
});

describe('ignore with one buffer', () => {
  for (const side of ['source', 'target'] as const) {
    it(`a ${side} error under ignore with --buf-size 1M does not stall the job: READY soon after`, async () => {
      const src = memoryRaw(8 * MiB, 31, false);
      const dst = blankRaw(8 * MiB);
      const source = new FaultImage(src.image);
      const target = new FaultImage(dst.image);
      (side === 'source' ? source : target).faults.add({ op: side === 'source' ? 'read' : 'write', errno: 'EIO', offset: MiB, length: 1, once: true });
      const job = await MirrorJob.create({
        source,
        target,
        options: { sync: 'full', 'buf-size': MiB, [side === 'source' ? 'on-source-error' : 'on-target-error']: 'ignore' },
        targetCreated: true,
      });
      const rec = recordEvents(job);
      const started = Date.now();
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'), 5000);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(rec.names()).toContain(`ERROR:${side === 'source' ? 'read' : 'write'}:ignore`);
      job.complete();
      expect((await job.result).outcome).toBe('completed');
      expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
    });
  }
});
