/** The device contract (device-contract.ts) against every device that runs in this process; nbd-devices.test.ts runs it against real NBD servers. */
import { describe, it, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceContract, type DeviceFactory } from './device-contract.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { NodeFileDevice } from '../../src/block/node-file.js';
import { FaultDevice } from '../../src/block/fault.js';
import { BlobDevice } from '../../src/block/blob.js';
import { HttpDevice } from '../../src/block/http.js';
import { startRangeServer } from '../helpers/http-server.js';

const dir = mkdtempSync(join(tmpdir(), 'diskmirror-contract-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;

const factories: DeviceFactory[] = [
  { name: 'memory', writable: true, make: async (initial) => ({ device: new MemoryDevice(initial) }) },
  {
    name: 'node-file',
    writable: true,
    make: async (initial) => {
      const path = join(dir, `f${fileNo++}`);
      writeFileSync(path, initial);
      return { device: await NodeFileDevice.open(path) };
    },
  },
  { name: 'fault', writable: true, make: async (initial) => ({ device: new FaultDevice(new MemoryDevice(initial)) }) },
  { name: 'blob', writable: false, make: async (initial) => ({ device: new BlobDevice(new Blob([initial as BlobPart])) }) },
  {
    name: 'http',
    writable: false,
    make: async (initial) => {
      const server = await startRangeServer(initial, { etag: '"v1"' });
      return { device: await HttpDevice.open(server.url), cleanup: () => server.close() };
    },
  },
  {
    name: 'http-probed',
    writable: false,
    make: async (initial) => {
      const server = await startRangeServer(initial, { noAcceptRanges: true });
      return { device: await HttpDevice.open(server.url), cleanup: () => server.close() };
    },
  },
];

for (const factory of factories) {
  describe(`BlockDevice contract: ${factory.name}`, () => {
    for (const c of deviceContract(factory)) it(c.name, c.run);
  });
}
