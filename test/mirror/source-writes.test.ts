/** Live source writes: background and write-blocking copy modes, sync=none. */
import { describe, expect, it } from 'vitest';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { memoryRaw, blankRaw, recordEvents, waitForEvent, isEvent, equalBytes, withJitter } from '../helpers/images.js';
import { rng, randInt } from '../helpers/random.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function randomWrite(next: () => number, size: number): { offset: number; data: Uint8Array } {
  const bytes = 1 + randInt(next, 200 * KiB);
  const offset = randInt(next, size - bytes);
  const data = new Uint8Array(bytes).fill(1 + randInt(next, 255));
  if (next() < 0.2) data.fill(0); // some writes of zeroes
  return { offset, data };
}

describe('source writes', () => {
  it('sync=none: READY at once, then only new writes are copied', async () => {
    const src = memoryRaw(4 * MiB, 2, false);
    const dst = blankRaw(4 * MiB);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'none' }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    expect(job.query()).toMatchObject({ len: 0, offset: 0 });
    await job.sourceWrite(100_000, new Uint8Array(5000).fill(0xab));
    await job.sourceWrite(3 * MiB, new Uint8Array(70_000).fill(0xcd));
    job.complete();
    await job.result;
    const out = dst.device.bytes();
    const expected = new Uint8Array(4 * MiB);
    expected.fill(0xab, 100_000, 105_000);
    expected.fill(0xcd, 3 * MiB, 3 * MiB + 70_000);
    // Chunks touched by writes are copied whole from the source.
    const g = job.granularity;
    for (const [o, l] of [[100_000, 5000], [3 * MiB, 70_000]] as const) {
      const first = Math.floor(o / g) * g;
      const end = Math.ceil((o + l) / g) * g;
      expected.set(src.device.bytes().subarray(first, end), first);
    }
    expect(equalBytes(out, expected)).toBe(true);
  });

  for (const [mode, jitter] of [['background', false], ['write-blocking', false], ['background', true], ['write-blocking', true]] as const) {
    it(`${mode}${jitter ? ', with random I/O latency' : ''}: random writes during the copy, then complete: target equals source`, async () => {
      const size = 16 * MiB + 12_345;
      const src = memoryRaw(size, 5);
      const dst = blankRaw(size);
      const job = await MirrorJob.create({
        source: jitter ? withJitter(src.image, 3) : src.image,
        target: jitter ? withJitter(dst.image, 4) : dst.image,
        options: { sync: 'full', 'copy-mode': mode, speed: 64 * MiB },
        targetCreated: true,
      });
      job.start();
      const next = rng(mode.length);
      let ready = false;
      void waitForEvent(job, isEvent('BLOCK_JOB_READY'), 60_000).then(() => (ready = true));
      let writes = 0;
      // Write until READY plus a few more (writes after READY must still be mirrored).
      let after = 0;
      while (after < 30) {
        const { offset, data } = randomWrite(next, size);
        await job.sourceWrite(offset, data);
        writes++;
        if (ready) after++;
        // Paced well below the copy speed: background mode converges only if the guest lets it.
        await new Promise((r) => setTimeout(r, 4));
      }
      if (!job.ready) await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
      job.complete();
      expect((await job.result).outcome).toBe('completed');
      expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
      await expect(job.sourceWrite(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EBUSY' });
    });
  }

  it('write-blocking converges under constant writes, where the writes never stop', async () => {
    const size = 8 * MiB;
    const src = memoryRaw(size, 6);
    const dst = blankRaw(size);
    const job = await MirrorJob.create({ source: src.image, target: dst.image, options: { sync: 'full', 'copy-mode': 'write-blocking' }, targetCreated: true });
    job.start();
    let stop = false;
    const next = rng(77);
    const writer = (async () => {
      while (!stop) {
        const { offset, data } = randomWrite(next, size);
        await job.sourceWrite(offset, data).catch((e: { code?: string }) => {
          if (e.code !== 'EBUSY') throw e;
          stop = true;
        });
        await new Promise((r) => setImmediate(r));
      }
    })();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'), 30_000);
    // Still writing: the job stays ready (it does not fall behind).
    await new Promise((r) => setTimeout(r, 200));
    expect(job.status).toBe('ready');
    job.complete();
    await job.result;
    stop = true;
    await writer;
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('write-blocking: a failed target write re-dirties the range, the source write succeeds, the policy runs', async () => {
    const size = 4 * MiB;
    const src = memoryRaw(size, 8);
    const dst = blankRaw(size);
    const target = new FaultImage(dst.image);
    const job = await MirrorJob.create({
      source: src.image,
      target,
      options: { sync: 'full', 'copy-mode': 'write-blocking', 'on-target-error': 'ignore' },
      targetCreated: true,
    });
    const rec = recordEvents(job);
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    target.faults.add({ op: 'write', errno: 'EIO', offset: 2 * MiB, length: 1, once: true });
    await job.sourceWrite(2 * MiB - 100, new Uint8Array(300).fill(0x5a)); // resolves: the source has it
    const back = new Uint8Array(300);
    await src.image.read(2 * MiB - 100, back);
    expect(back.every((b) => b === 0x5a)).toBe(true);
    expect(rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').map((e) => e.data)).toEqual([
      expect.objectContaining({ operation: 'write', action: 'ignore', errno: 'EIO' }),
    ]);
    job.complete();
    await job.result;
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('write-blocking: concurrent overlapping writes land on the target in the order they land on the source', async () => {
    const size = 2 * MiB;
    const src = memoryRaw(size, 9);
    const dst = blankRaw(size);
    // Random latency on both sides reorders any I/O that is allowed to run concurrently.
    const job = await MirrorJob.create({
      source: withJitter(src.image, 1),
      target: withJitter(dst.image, 2),
      options: { sync: 'full', 'copy-mode': 'write-blocking' },
      targetCreated: true,
    });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    // Many overlapping writes at once, all to the same chunks.
    const writes = Array.from({ length: 40 }, (_, i) => job.sourceWrite(100_000 + (i % 7) * 1000, new Uint8Array(20_000).fill(i + 1)));
    await Promise.all(writes);
    expect(job.stats().dirtyChunks).toBe(0);
    job.complete();
    await job.result;
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });

  it('write-blocking: a failed source write reaches the caller; the job goes on', async () => {
    const src = memoryRaw(2 * MiB);
    const dst = blankRaw(2 * MiB);
    const source = new FaultImage(src.image);
    const job = await MirrorJob.create({ source, target: dst.image, options: { sync: 'full', 'copy-mode': 'write-blocking' }, targetCreated: true });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    source.faults.add({ op: 'write', errno: 'EIO', offset: 0, length: 8192, once: true });
    await expect(job.sourceWrite(4096, new Uint8Array(4096).fill(7))).rejects.toMatchObject({ code: 'EIO' });
    expect(job.status).toBe('ready');
    await job.sourceWrite(4096, new Uint8Array(4096).fill(8));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
    expect(equalBytes(dst.device.bytes(), src.device.bytes())).toBe(true);
  });
});
