/// <reference lib="webworker" />
/**
 * Runs test suites inside a dedicated worker, where OPFS sync access
 * handles exist, and posts back one result per case.
 */
import { deviceContract, type DeviceFactory } from '../../contract/device-contract.js';
import { OpfsDevice } from '../../../src/block/opfs.js';

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

self.onmessage = async (e: MessageEvent<{ suite: string }>) => {
  if (e.data.suite === 'opfs-contract') {
    const cases = [
      ...deviceContract(opfsFactory),
      ...deviceContract(opfsReadOnlyFactory),
      { name: 'opfs: a file already open read-write is EBUSY', run: lockedFileIsBusy },
    ];
    self.postMessage(await runCases(cases));
  } else {
    self.postMessage([{ name: e.data.suite, ok: false, error: 'unknown suite' }]);
  }
};
