/**
 * The device contract (device-contract.ts) against real NBD servers: nbdkit's
 * file plugin, reached over its Unix socket and through websockify's
 * WebSocket bridge (the page's way to it).
 */
import { describe, it, afterAll, beforeAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceContract, type DeviceFactory } from './device-contract.js';
import { NbdDevice } from '../../src/block/nbd/device.js';
import { connectNodeWebSocket, connectSocket } from '../../src/block/nbd/node-transport.js';
import { nbdkitFile, websockify } from '../helpers/nbd-servers.js';
import { requireProgram } from '../helpers/require-program.js';

beforeAll(() => {
  requireProgram('nbdkit', 'the NBD server these devices talk to');
  requireProgram('websockify', 'the WebSocket bridge to the NBD server');
});
const dir = mkdtempSync(join(tmpdir(), 'diskmirror-contract-nbd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;

const factories: DeviceFactory[] = (['unix', 'websocket'] as const).map(
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
);

for (const factory of factories) {
  describe(`BlockDevice contract: ${factory.name}`, () => {
    for (const c of deviceContract(factory)) it(c.name, c.run);
  });
}
