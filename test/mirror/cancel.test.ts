/**
 * Cancelling a job: soft and force, before it starts, during the flush before
 * READY, with source writes under way, and a cancel racing a complete (as
 * QEMU's job_cancel and job_complete decide it).
 */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { MirrorControl } from '../../src/mirror/control.js';
import type { BlockError } from '../../src/block/block-device.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isEvent, isStatus, equalBytes } from '../helpers/images.js';
import { delay, hook } from '../helpers/hook.js';

const MiB = 1 << 20;

describe('cancel', () => {
  it('a soft cancel that arrives during the flush before READY cancels (it used to spin forever)', async () => {
    const src = memoryRaw(2 * MiB);
    let flushing!: () => void;
    const flushStarted = new Promise<void>((r) => (flushing = r));
    const target = hook(blankRaw(2 * MiB).image, 'flush', async (flush) => (flushing(), await delay(50), flush()));
    const job = await MirrorJob.create({ source: src.image, target, options: { sync: 'full' }, targetCreated: true });
    const rec = recordEvents(job);
    job.start();
    await flushStarted;
    job.blockJobCancel(false);
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).not.toContain('BLOCK_JOB_READY');
    expect(rec.names().slice(-4)).toEqual(['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  });

  it('a job cancelled before it starts concludes at once', async () => {
    const job = await MirrorJob.create({ source: memoryRaw(MiB).image, target: blankRaw(MiB).image, options: { sync: 'full' } });
    const rec = recordEvents(job);
    job.cancel();
    expect((await job.result).outcome).toBe('cancelled');
    expect(rec.names()).toEqual(['created', 'aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  });

  for (const mode of ['background', 'write-blocking'] as const) {
    it(`${mode}: source writes under way when the job is cancelled land, and say so`, async () => {
      const src = memoryRaw(MiB, 1, false);
      const source = hook(src.image, 'write', async (write, ...args) => (await delay(60), write(...args)));
      const job = await MirrorJob.create({ source, target: blankRaw(MiB).image, options: { sync: 'full', 'copy-mode': mode }, targetCreated: true });
      job.start();
      await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
      const writes = [job.sourceWrite(0, new Uint8Array(4096).fill(1)), job.sourceWrite(0, new Uint8Array(4096).fill(2))];
      await delay(10);
      job.cancel();
      await job.result;
      const settled = await Promise.allSettled(writes);
      expect(settled[0]!.status).toBe('fulfilled');
      // The second either landed or was refused because the job had ended, never a kernel error.
      if (settled[1]!.status === 'rejected') expect((settled[1]!.reason as BlockError).code).toBe('EBUSY');
    });
  }
});

describe('a complete overtaken by a cancel', () => {
  it('job-complete in standby, then job-resume and job-cancel back to back: the job completes and the cancel finds no job, as in QEMU', async () => {
    const src = memoryRaw(2 * MiB, 41);
    const dst = blankRaw(2 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', id: 'mirror' }, targetCreated: true });
    const control = new MirrorControl();
    control.add(job);
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    await control.execute('job-pause', { id: 'mirror' });
    await waitForEvent(job, isStatus('standby'));
    await control.execute('job-complete', { id: 'mirror' });
    const answers = await Promise.allSettled([control.execute('job-resume', { id: 'mirror' }), control.execute('job-cancel', { id: 'mirror' })]);
    expect(answers[0]).toMatchObject({ status: 'fulfilled' });
    expect(answers[1]).toMatchObject({ status: 'rejected', reason: { message: 'Job not found' } });
    expect((await job.result).outcome).toBe('completed');
    expect(rec.names()).toContain('BLOCK_JOB_COMPLETED');
    expect(rec.names()).not.toContain('BLOCK_JOB_CANCELLED');
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('a cancel while the completion still has data to copy is a cancel, as in QEMU', async () => {
    const src = memoryRaw(2 * MiB, 42);
    const dst = blankRaw(2 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', id: 'mirror' }, targetCreated: true });
    const control = new MirrorControl();
    control.add(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    await control.execute('job-pause', { id: 'mirror' });
    await waitForEvent(job, isStatus('standby'));
    await job.sourceWrite(0, new Uint8Array(65536).fill(7));
    await control.execute('job-complete', { id: 'mirror' });
    await control.execute('job-cancel', { id: 'mirror' });
    expect((await job.result).outcome).toBe('cancelled');
  });
});

// Found by the job property test (test/properties/job.property.test.ts).
describe('a soft cancel after READY', () => {
  it('makes a later complete refused, as QEMU (job_complete refuses a job with a cancel requested): the job finishes without switching over', async () => {
    const src = memoryRaw(MiB, 9);
    const dst = blankRaw(MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, targetCreated: true, options: { sync: 'full', 'auto-finalize': false } });
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    job.blockJobCancel(false);
    expect(() => job.complete()).toThrow(`The active block job '${job.id}' cannot be completed`);
    await waitForEvent(job, isStatus('pending'));
    job.finalize();
    expect((await job.result).outcome).toBe('completed');
    expect(rec.names().filter((n) => n.startsWith('BLOCK_JOB_'))).toEqual(['BLOCK_JOB_READY', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_COMPLETED']);
  });
});
