/// <reference lib="webworker" />
/**
 * Runs test suites inside a dedicated worker, where OPFS sync access
 * handles exist, and posts back one result per case.
 */
import { deviceContract, type DeviceFactory } from '../../contract/device-contract.js';
import { OpfsDevice } from '../../../src/block/opfs.js';
import { storeCases } from './store-cases.js';

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
 * OPFS copy speed: a plain loop of sync-handle reads and writes (the most
 * OPFS allows) against the mirror job over the same file, in one run.
 */
async function benchOpfs(megabytes: number): Promise<Record<string, number>> {
  const { MirrorJob } = await import('../../../src/mirror/mirror-job.js');
  const { RawImage } = await import('../../../src/format/raw.js');
  const dir = await opfsDir();
  const bytes = megabytes << 20;
  const chunk = 1 << 20;
  const src = await OpfsDevice.open(dir, 'bench-src', { create: true });
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < bytes; off += chunk) {
    for (let i = 0; i < chunk; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
    await src.write(off, buf);
  }
  await src.flush();
  const results: Record<string, number> = {};
  for (let round = 0; round < 2; round++) {
    // Peer: read 1 MiB, write 1 MiB, straight through the handles.
    for (const name of ['bench-plain', 'bench-mirror']) await dir.removeEntry(name).catch(() => {});
    const plain = await OpfsDevice.open(dir, 'bench-plain', { create: true });
    let t0 = performance.now();
    for (let off = 0; off < bytes; off += chunk) {
      await src.read(off, buf);
      await plain.write(off, buf);
    }
    await plain.flush();
    results[`plain_ms_${round}`] = performance.now() - t0;
    await plain.close();
    const target = await OpfsDevice.open(dir, 'bench-mirror', { create: true });
    await target.resize(bytes);
    t0 = performance.now();
    const job = await MirrorJob.create({ source: new RawImage(src), target: new RawImage(target), options: { sync: 'full' }, targetCreated: true });
    job.on((ev) => ev.event === 'BLOCK_JOB_READY' && job.complete());
    job.start();
    await job.result;
    results[`mirror_ms_${round}`] = performance.now() - t0;
    await target.close();
  }
  await src.close();
  for (const name of ['bench-src', 'bench-plain', 'bench-mirror']) await dir.removeEntry(name).catch(() => {});
  return results;
}

self.onmessage = async (e: MessageEvent<{ suite: string; megabytes?: number }>) => {
  if (e.data.suite === 'bench-opfs') {
    self.postMessage(await benchOpfs(e.data.megabytes ?? 256));
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
