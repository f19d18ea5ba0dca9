/**
 * A completion (or a soft cancel after READY) whose final flush keeps
 * failing under on-target-error=ignore is retried, and does not hold the
 * monitor: a force cancel is still answered and ends the job.
 */
import { describe, expect, it } from 'vitest';
import { MirrorControl } from '../../src/mirror/control.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { FaultRules } from '../../src/block/fault.js';
import { blankRaw, isEvent, memoryRaw, recordEvents, waitForEvent } from '../helpers/images.js';

const MiB = 1 << 20;

describe('a completion whose final flush keeps failing', () => {
  for (const [verb, args] of [
    ['block-job-cancel', { device: 'mirror0', force: false }],
    ['job-complete', { id: 'mirror0' }],
  ] as const) {
    it(`${verb}: the flush is retried under ignore, and a force cancel is answered and ends the job`, async () => {
      const faults = { source: new FaultRules(), target: new FaultRules() };
      const job = await MirrorJob.create({
        source: new FaultImage(memoryRaw(2 * MiB).image, faults.source),
        target: new FaultImage(blankRaw(2 * MiB).image, faults.target),
        options: { id: 'mirror0', sync: 'full', 'on-target-error': 'ignore' },
        targetCreated: true,
      });
      const control = new MirrorControl();
      control.add(job, faults);
      const events = recordEvents(job);
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
      faults.target.add({ op: 'flush', errno: 'ENOSPC', offset: 0, length: null, once: false });
      await control.execute(verb, args);
      // The final flush fails and is retried (ignore): the job stays where it is.
      await waitForEvent(job, isEvent('BLOCK_JOB_ERROR'));
      await new Promise((r) => setTimeout(r, 50));
      expect(job.status).toBe('ready');
      const answered = await Promise.race([
        control.execute('block-job-cancel', { device: 'mirror0', force: true }).then(() => 'answered'),
        new Promise((r) => setTimeout(() => r('no answer within 5 s'), 5000)),
      ]);
      expect(answered).toBe('answered');
      expect((await job.result).outcome).toBe('cancelled');
      expect(events.names()).toContain('BLOCK_JOB_CANCELLED');
    });
  }
});
