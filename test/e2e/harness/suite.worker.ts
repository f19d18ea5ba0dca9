/// <reference lib="webworker" />
/**
 * Runs test suites inside a dedicated worker, where OPFS sync access
 * handles exist, and posts back one result per case.
 */
import { deviceContract, type DeviceFactory } from '../../contract/device-contract.js';
import { OpfsDevice } from '../../../src/block/opfs.js';
import { storeCases } from './store-cases.js';
import type { ImageFormat } from '../../../src/format/image-format.js';

interface CaseResult {
  name: string;
  ok: boolean;
  error?: string;
}

let fileNo = 0;

async function opfsDir(): Promise<FileSystemDirectoryHandle> {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('contract-tests', { create: true });
}

const opfsFactory: DeviceFactory = {
  name: 'opfs',
  writable: true,
  async make(initial) {
    const dir = await opfsDir();
    const name = `device-${Date.now()}-${fileNo++}`;
    const device = await OpfsDevice.open(dir, name, { create: true });
    await device.write(0, initial);
    await device.flush();
    return { device, cleanup: () => dir.removeEntry(name) };
  },
};

const opfsReadOnlyFactory: DeviceFactory = {
  name: 'opfs-read-only',
  writable: false,
  async make(initial) {
    const dir = await opfsDir();
    const name = `device-ro-${Date.now()}-${fileNo++}`;
    const writer = await OpfsDevice.open(dir, name, { create: true });
    await writer.write(0, initial);
    await writer.close();
    const device = await OpfsDevice.open(dir, name, { readOnly: true });
    return { device, cleanup: () => dir.removeEntry(name) };
  },
};

async function lockedFileIsBusy(): Promise<void> {
  const dir = await opfsDir();
  const name = `locked-${Date.now()}`;
  const first = await OpfsDevice.open(dir, name, { create: true });
  try {
    await OpfsDevice.open(dir, name);
    throw new Error('a second read-write open of the same file succeeded');
  } catch (err) {
    if ((err as { code?: string }).code !== 'EBUSY') throw new Error(`expected EBUSY, got ${(err as Error).message}`);
  } finally {
    await first.close();
    await dir.removeEntry(name);
  }
}

async function runCases(cases: { name: string; run(): Promise<void> }[]): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const c of cases) {
    try {
      await c.run();
      results.push({ name: c.name, ok: true });
    } catch (err) {
      results.push({ name: c.name, ok: false, error: String((err as Error)?.stack ?? err) });
    }
  }
  return results;
}

/**
 * OPFS copy speed: a plain loop of sync-handle reads and writes (1 MiB
 * each, the most OPFS allows) against the mirror job copying the same
 * virtual disk, `runs` times each, interleaved (which goes first alternates).
 * The source is random data, as raw or as a qcow2 made from it (its L2
 * tables and refcounts then count against the job, not the plain loop).
 * Returns every run's milliseconds.
 */
async function benchOpfs(megabytes: number, runs: number, format: 'raw' | 'qcow2'): Promise<{ plain: number[]; mirror: number[] }> {
  const { MirrorJob } = await import('../../../src/mirror/mirror-job.js');
  const { RawImage } = await import('../../../src/format/raw.js');
  const { Qcow2Image } = await import('../../../src/format/qcow2/image.js');
  const { createQcow2 } = await import('../../../src/format/qcow2/create.js');
  const dir = await opfsDir();
  const bytes = megabytes << 20;
  const chunk = 1 << 20;
  const names = ['bench-src', 'bench-src-qcow2', 'bench-plain', 'bench-mirror'];
  for (const name of names) await dir.removeEntry(name).catch(() => {});
  const src = await OpfsDevice.open(dir, 'bench-src', { create: true });
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < bytes; off += chunk) {
    for (let i = 0; i < chunk; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
    await src.write(off, buf);
  }
  await src.flush();
  const mirror = async (source: ImageFormat, target: ImageFormat) => {
    const job = await MirrorJob.create({ source, target, options: { sync: 'full' }, targetCreated: true });
    job.on((ev) => ev.event === 'BLOCK_JOB_READY' && job.complete());
    job.start();
    const outcome = await job.result;
    if (outcome.outcome !== 'completed') throw new Error(`bench mirror ended ${outcome.outcome}`);
  };
  let qcow2Device: OpfsDevice | null = null;
  let source: ImageFormat = new RawImage(src);
  if (format === 'qcow2') {
    // Made by the engine from the raw file, before any timing.
    qcow2Device = await OpfsDevice.open(dir, 'bench-src-qcow2', { create: true });
    await createQcow2(qcow2Device, { size: bytes });
    await mirror(new RawImage(src), await Qcow2Image.open(qcow2Device));
    await qcow2Device.flush();
    source = await Qcow2Image.open(qcow2Device, { readOnly: true });
  }
  const plainMs: number[] = [];
  const mirrorMs: number[] = [];
  for (let run = 0; run < runs; run++) {
    for (const who of run % 2 ? ['mirror', 'plain'] : ['plain', 'mirror']) {
      await dir.removeEntry(`bench-${who}`).catch(() => {});
      const out = await OpfsDevice.open(dir, `bench-${who}`, { create: true });
      const t0 = performance.now();
      if (who === 'plain') {
        for (let off = 0; off < bytes; off += chunk) {
          await src.read(off, buf);
          await out.write(off, buf);
        }
        await out.flush();
        plainMs.push(performance.now() - t0);
      } else {
        await out.resize(bytes);
        await mirror(source, new RawImage(out));
        mirrorMs.push(performance.now() - t0);
        // Each copy is checked against the source, outside the timing.
        const probe = new Uint8Array(chunk);
        for (const off of [0, bytes / 2, bytes - chunk]) {
          await src.read(off, buf);
          await out.read(off, probe);
          if (!buf.every((b, i) => b === probe[i])) throw new Error(`bench mirror copy differs at ${off}`);
        }
      }
      await out.close();
    }
  }
  await src.close();
  await qcow2Device?.close();
  for (const name of names) await dir.removeEntry(name).catch(() => {});
  return { plain: plainMs, mirror: mirrorMs };
}

self.onmessage = async (e: MessageEvent<{ suite: string; megabytes?: number; runs?: number; format?: 'raw' | 'qcow2' }>) => {
  if (e.data.suite === 'bench-opfs') {
    try {
      self.postMessage(await benchOpfs(e.data.megabytes ?? 256, e.data.runs ?? 5, e.data.format ?? 'raw'));
    } catch (err) {
      self.postMessage({ error: String((err as Error)?.stack ?? err) });
    }
    return;
  }
  if (e.data.suite === 'opfs-contract') {
    const cases = [
      ...deviceContract(opfsFactory),
      ...deviceContract(opfsReadOnlyFactory),
      { name: 'opfs: a file already open read-write is EBUSY', run: lockedFileIsBusy },
    ];
    self.postMessage(await runCases(cases));
  } else if (e.data.suite === 'opfs-store') {
    self.postMessage(await runCases(storeCases));
  } else {
    self.postMessage([{ name: e.data.suite, ok: false, error: 'unknown suite' }]);
  }
};
