/**
 * How a job's life ends (mirror/end.ts), as the worker and the command
 * both end it: the images closed; a target the launch made and the job
 * never wrote removed, with its checkpoint (while still held, or once
 * closed where the store removes a file under its lock); the checkpoint
 * of a failed or halted job sealed with the stamps of the closed images.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NodeFileStore } from '../../src/block/node-store.js';
import { SidecarCheckpointer } from '../../src/cli/sidecar.js';
import { type OpenedImage, createInStore, openChain } from '../../src/format/image-access.js';
import { stampChain } from '../../src/format/image-stamp.js';
import { type JobStop, endMirror } from '../../src/mirror/end.js';
import { parseFaultSpec } from '../../src/qapi/faults.js';
import { launchMirror } from '../../src/mirror/launch.js';
import { isStatus, waitForEvent } from '../helpers/images.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A store that says when it removes a file. */
class LoggedStore extends NodeFileStore {
  constructor(
    dir: string,
    private readonly log: string[],
  ) {
    super(dir);
  }
  override async remove(name: string): Promise<void> {
    this.log.push(`remove ${name.slice(name.lastIndexOf('/') + 1)}`);
    return super.remove(name);
  }
}

/** A job from a 1 MiB source of data into a new raw target, checkpointed to a sidecar; `faults` armed before it starts. */
async function launch(faults: string[], options: { dropOnceClosed?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'diskmirror-job-end-'));
  dirs.push(dir);
  const log: string[] = [];
  const store = new LoggedStore(dir, log);
  const made = await createInStore(store, 'src.raw', { format: 'raw', size: MiB }, { replace: false });
  await made.image.write(0, new Uint8Array(MiB).fill(0x5a));
  await made.publish();
  await made.image.close();
  const source = await openChain(store, 'src.raw', { readOnly: true });
  const sidecar = join(dir, 'dst.raw.dmcheckpoint');
  const launched = await launchMirror({
    store,
    source: { image: source.image, name: 'src.raw', opened: source },
    target: 'dst.raw',
    targetFormat: 'raw',
    options: { sync: 'full', granularity: 64 * KiB, 'buf-size': 64 * KiB },
    backingName: (b) => b,
    faults: faults.map(parseFaultSpec),
    checkpointer: (target: OpenedImage) =>
      new SidecarCheckpointer(sidecar, { source: source.name, target: target.name, sourceFormat: 'raw', targetFormat: 'raw' }, async () => ({
        source: await stampChain(store, source, true),
        target: (await stampChain(store, target, false))[0]!,
      })),
    checkpointIntervalSeconds: 3600,
  });
  const close = launched.target.image.close.bind(launched.target.image);
  launched.target.image.close = async () => {
    log.push('close target');
    return close();
  };
  const ending = { store, source: { image: source.image, name: 'src.raw', opened: source }, launched, ...options };
  const end = (stop: JobStop) => endMirror(ending, stop);
  /** The images' stamps now, each opened read-only (as the seal stamps them). */
  const stampsNow = async () => {
    const stamp = async (name: string) => {
      const opened = await openChain(store, name, { readOnly: true, format: 'raw' });
      try {
        return await stampChain(store, opened, true);
      } finally {
        await opened.image.close();
      }
    };
    return { source: await stamp('src.raw'), target: (await stamp('dst.raw'))[0]! };
  };
  return { store, job: launched.job, checkpoints: launched.checkpointer!, end, log, stampsNow };
}

describe('the end of a job', () => {
  it('completed: the images are closed (the target opens exclusive again), nothing dropped or sealed, no checkpoint left', async () => {
    const run = await launch([]);
    run.job.start();
    await waitForEvent(run.job, isStatus('ready'));
    run.job.complete();
    expect((await run.job.result).outcome).toBe('completed');
    expect(await run.end('completed')).toEqual({ dropped: false, sealed: false });
    const again = await openChain(run.store, 'dst.raw', { readOnly: false });
    await again.image.close();
    expect(await run.checkpoints.read()).toBeNull();
  });

  it('failed after writing: the target stays and its checkpoint is sealed with the stamps of the closed images', async () => {
    const run = await launch(['target:write:EIO:512K-']);
    run.job.start();
    expect((await run.job.result).outcome).toBe('failed');
    expect(run.job.stats().bytesWritten).toBeGreaterThan(0);
    expect(await run.end('failed')).toEqual({ dropped: false, sealed: true });
    const { record } = (await run.checkpoints.read())!;
    expect(record.final).toBe(true);
    expect(record.images).toEqual(await run.stampsNow());
    expect(run.log).toEqual(['close target']);
  });

  it('failed before writing a byte: the target this launch made goes while still held, then its checkpoint', async () => {
    const run = await launch(['target:write:EIO:0-']);
    run.job.start();
    expect((await run.job.result).outcome).toBe('failed');
    expect(run.job.stats().bytesWritten).toBe(0);
    expect(await run.end('failed')).toEqual({ dropped: true, sealed: false });
    expect(run.log).toEqual(['remove dst.raw', 'close target']);
    expect(await run.store.identify('dst.raw')).toBeNull();
    expect(await run.checkpoints.read()).toBeNull();
  });

  it('where a store removes a file under its lock, a never-written target goes once closed', async () => {
    const run = await launch(['target:write:EIO:0-'], { dropOnceClosed: true });
    run.job.start();
    expect((await run.job.result).outcome).toBe('failed');
    expect(await run.end('failed')).toEqual({ dropped: true, sealed: false });
    expect(run.log).toEqual(['close target', 'remove dst.raw']);
    expect(await run.store.identify('dst.raw')).toBeNull();
    expect(await run.checkpoints.read()).toBeNull();
  });

  it('cancelled after writing: the target stays, the job took its checkpoint away, nothing is sealed', async () => {
    const run = await launch([]);
    run.job.start();
    await waitForEvent(run.job, isStatus('ready'));
    run.job.cancel(true);
    expect((await run.job.result).outcome).toBe('cancelled');
    expect(await run.end('cancelled')).toEqual({ dropped: false, sealed: false });
    expect(await run.store.identify('dst.raw')).not.toBeNull();
    expect(await run.checkpoints.read()).toBeNull();
  });

  it('halted with its state stored: closed and sealed; halted without: closed, the checkpoint left as it was', async () => {
    const sealed = await launch([]);
    sealed.job.start();
    await waitForEvent(sealed.job, isStatus('ready'));
    const halt = await sealed.job.halt();
    expect(halt).toEqual({ quiet: true, saved: true });
    expect(await sealed.end('halted')).toEqual({ dropped: false, sealed: true });
    const { record } = (await sealed.checkpoints.read())!;
    expect(record).toMatchObject({ final: true, images: await sealed.stampsNow() });

    const unsealed = await launch([]);
    unsealed.job.start();
    await waitForEvent(unsealed.job, isStatus('ready'));
    await unsealed.job.halt();
    expect(await unsealed.end('halted-unsaved')).toEqual({ dropped: false, sealed: false });
    expect((await unsealed.checkpoints.read())!.record.final).toBe(false);
    const again = await openChain(unsealed.store, 'dst.raw', { readOnly: false });
    await again.image.close();
  });
});
