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
import { NbdDevice } from '../../src/block/nbd/device.js';
import { connectNodeWebSocket, connectSocket } from '../../src/block/nbd/node-transport.js';
import { nbdkitFile, websockify } from '../helpers/nbd-servers.js';

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
  ...(['unix', 'websocket'] as const).map(
    (via): DeviceFactory => ({
      // A real server (nbdkit's file plugin) that asks for 512-byte blocks: unaligned requests are widened or read, changed and written back
      // (the export's last block is partial: the policy lets it be reached, as the specification allows).
      name: `nbd (${via}, 512-byte blocks)`,
      writable: true,
      fixedSize: true,
      make: async (initial) => {
        const path = join(dir, `n${fileNo++}`);
        writeFileSync(path, initial);
        const server = await nbdkitFile(path, `${path}.sock`, ['--filter=blocksize-policy', 'blocksize-minimum=512', 'blocksize-error-policy=allow']);
        const bridge = via === 'websocket' ? await websockify(server.socket) : null;
        const connect = bridge ? () => connectNodeWebSocket(bridge.url) : () => connectSocket({ path: server.socket });
        const device = await NbdDevice.open({ connect, exportName: '', name: server.uri, key: server.uri, readOnly: false });
        if (device.info.minBlock !== 512) throw new Error(`the server should insist on 512-byte blocks, not ${device.info.minBlock}`);
        return {
          device,
          cleanup: async () => {
            await bridge?.stop();
            await server.stop();
          },
        };
      },
    }),
  ),
];

for (const factory of factories) {
  describe(`BlockDevice contract: ${factory.name}`, () => {
    for (const c of deviceContract(factory)) it(c.name, c.run);
  });
}
