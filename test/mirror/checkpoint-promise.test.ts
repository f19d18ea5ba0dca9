/**
 * A checkpoint never promises more than the source holds: the two rules of
 * mirror/checkpoints.ts pinned one step at a time (crash-points.test.ts
 * checks the promise itself at every point of whole runs).
 */
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/block/memory.js';
import type { ImageFormat } from '../../src/format/image-format.js';
import { RawImage } from '../../src/format/raw.js';
import { Kernel } from '../../src/kernel/kernel.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { blankRaw, isEvent, waitForEvent } from '../helpers/images.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GRANULARITY = 64 * KiB;

/** A raw source whose writes can be held, logging its writes and flushes (and the checkpointer's doings) in one order. */
function source(log: string[]) {
  let hold: Promise<void> | null = null;
  let release = () => {};
  const image = new RawImage(new MemoryDevice(new Uint8Array(MiB).fill(7)));
  const write = image.write.bind(image);
  const flush = image.flush.bind(image);
  image.write = async (offset: number, data: Uint8Array) => {
    log.push(`source write ${offset}`);
    if (hold) await hold;
    return write(offset, data);
  };
  image.flush = async () => {
    log.push('source flush');
    return flush();
  };
  return {
    image: image as ImageFormat,
    holdWrites() {
      hold = new Promise((r) => (release = r));
    },
    releaseWrites() {
      hold = null;
      release();
    },
  };
}

async function dirtyIn(checkpoint: Checkpoint, chunk: number): Promise<boolean> {
  const kernel = await Kernel.create();
  const bitmap = kernel.newBitmap(Math.ceil(checkpoint.size / checkpoint.options.granularity));
  bitmap.deserialize(checkpoint.bitmap);
  return bitmap.get(chunk);
}

async function readyJob(log: string[], src: ReturnType<typeof source>) {
  const saved: Checkpoint[] = [];
  const job = await MirrorJob.create({
    source: src.image,
    target: blankRaw(MiB).image,
    options: { sync: 'full', granularity: GRANULARITY },
    targetCreated: true,
    // Only the checkpoints the test asks for (and the job's own at its start and at READY).
    checkpointIntervalSeconds: 3600,
    checkpointer: {
      save: async (c) => {
        log.push(`save ${saved.length}`);
        saved.push(structuredClone(c));
      },
      markSourceWriting: async () => {
        log.push('mark');
      },
      remove: async () => {},
    },
  });
  job.start();
  await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
  // READY's own checkpoint has landed.
  await job.checkpoint();
  return { job, saved };
}

async function quiet(job: MirrorJob): Promise<void> {
  for (let i = 0; i < 200 && (job.stats().dirtyChunks > 0 || job.stats().inFlightOps > 0); i++) await new Promise((r) => setTimeout(r, 5));
  expect(job.stats().dirtyChunks).toBe(0);
}

describe('a checkpoint never promises more than the source holds', () => {
  it('a guest write still landing when a bitmap is taken makes the next checkpoint flush the source before it calls the chunk clean', async () => {
    const log: string[] = [];
    const src = source(log);
    const { job, saved } = await readyJob(log, src);
    src.holdWrites();
    const write = job.sourceWrite(3 * GRANULARITY + 100, new Uint8Array(5000).fill(0xa5));
    await new Promise((r) => setTimeout(r, 10));
    expect(log.at(-1)).toBe(`source write ${3 * GRANULARITY + 100}`);
    // A checkpoint while the write is under way: its chunk is dirty there.
    await job.checkpoint();
    const during = saved.at(-1)!;
    expect(await dirtyIn(during, 3)).toBe(true);
    src.releaseWrites();
    await write;
    await quiet(job);
    const from = log.length;
    await job.checkpoint();
    const after = saved.at(-1)!;
    // Clean now, so the write's data and metadata were made durable first.
    expect(await dirtyIn(after, 3)).toBe(false);
    const tail = log.slice(from);
    expect(tail).toContain('source flush');
    expect(tail.indexOf('source flush')).toBeLessThan(tail.indexOf(`save ${saved.length - 1}`));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
  });

  it('the first guest write after a stored checkpoint waits for its mark; later ones do not mark again until the next checkpoint', async () => {
    const log: string[] = [];
    const src = source(log);
    const { job } = await readyJob(log, src);
    const from = log.length;
    await job.sourceWrite(0, new Uint8Array(512).fill(1));
    await job.sourceWrite(GRANULARITY, new Uint8Array(512).fill(2));
    expect(log.slice(from)).toEqual(['mark', 'source write 0', `source write ${GRANULARITY}`]);
    await quiet(job);
    await job.checkpoint();
    const next = log.length;
    await job.sourceWrite(2 * GRANULARITY, new Uint8Array(512).fill(3));
    expect(log.slice(next)).toEqual(['mark', `source write ${2 * GRANULARITY}`]);
    job.complete();
    expect((await job.result).outcome).toBe('completed');
  });

  it('a checkpoint taken while a mark is being stored is marked in turn before the write goes ahead', async () => {
    const log: string[] = [];
    const src = source(log);
    let marked = () => {};
    const saved: Checkpoint[] = [];
    let marks = 0;
    const job = await MirrorJob.create({
      source: src.image,
      target: blankRaw(MiB).image,
      options: { sync: 'full', granularity: GRANULARITY },
      targetCreated: true,
      checkpointIntervalSeconds: 3600,
      checkpointer: {
        save: async (c) => {
          log.push(`save ${saved.length}`);
          saved.push(structuredClone(c));
        },
        markSourceWriting: async () => {
          log.push(`mark ${marks}`);
          // The first mark is slow: a checkpoint comes meanwhile.
          if (marks++ === 0) await new Promise<void>((r) => (marked = r));
        },
        remove: async () => {},
      },
    });
    job.start();
    await waitForEvent(job, isEvent('BLOCK_JOB_READY'));
    await job.checkpoint();
    const write = job.sourceWrite(0, new Uint8Array(512).fill(9));
    await new Promise((r) => setTimeout(r, 10));
    const checkpoint = job.checkpoint();
    await new Promise((r) => setTimeout(r, 10));
    marked();
    await Promise.all([write, checkpoint]);
    const tail = log.slice(log.indexOf('mark 0'));
    // The write came only after the checkpoint stored meanwhile was marked too.
    expect(tail.indexOf('mark 1')).toBeGreaterThan(tail.indexOf(`save ${saved.length - 1}`));
    expect(tail.indexOf('source write 0')).toBeGreaterThan(tail.indexOf('mark 1'));
    job.complete();
    expect((await job.result).outcome).toBe('completed');
  });
});
