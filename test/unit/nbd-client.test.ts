/**
 * The NBD client against servers that misbehave (made here on a local TCP
 * port): garbage instead of a greeting, a server that greets and then
 * says nothing, one that hangs up mid-handshake, one that announces
 * one-byte blocks, one that answers a read with the same chunk twice; and
 * the URI forms.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { NbdDevice } from '../../src/block/nbd/device.js';
import { connectSocket } from '../../src/block/nbd/node-transport.js';
import { nbdKey, parseNbdUri } from '../../src/block/nbd/uri.js';
import { type FakeNbdServer, fakeNbdServer } from '../helpers/fake-nbd-server.js';
import { pattern } from '../contract/device-contract.js';

let server: Server | null = null;
const sockets: Socket[] = [];
const fakes: FakeNbdServer[] = [];
afterEach(async () => {
  for (const f of fakes.splice(0)) await f.close();
  for (const s of sockets.splice(0)) s.destroy();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

async function fakeServer(onClient: (socket: Socket) => void): Promise<number> {
  server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    onClient(s);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

/** A fixed newstyle greeting (FIXED_NEWSTYLE | NO_ZEROES). */
function greeting(): Buffer {
  const b = Buffer.alloc(18);
  b.write('NBDMAGICIHAVEOPT', 0);
  b.writeUInt16BE(3, 16);
  return b;
}

function open(port: number, idleTimeoutMs = 2000) {
  return NbdDevice.open({ connect: () => connectSocket({ host: '127.0.0.1', port }), exportName: '', name: `nbd://127.0.0.1:${port}/`, key: 'k', readOnly: true, idleTimeoutMs });
}

describe('a server that is not one', () => {
  it('garbage instead of a greeting: "not an NBD server"', async () => {
    const port = await fakeServer((s) => s.write(Buffer.alloc(64, 0x41)));
    await expect(open(port)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(/not an NBD server/) });
  });

  it('oldstyle negotiation is refused by name', async () => {
    const port = await fakeServer((s) => {
      const b = Buffer.alloc(152);
      b.write('NBDMAGIC', 0);
      b.writeBigUInt64BE(0x00420281861253n, 8);
      s.write(b);
    });
    await expect(open(port)).rejects.toMatchObject({ code: 'ENOTSUP', message: expect.stringMatching(/oldstyle/) });
  });

  it('a greeting, then silence: the open fails (ETIMEDOUT) instead of hanging', async () => {
    const port = await fakeServer((s) => s.write(greeting()));
    const started = Date.now();
    await expect(open(port, 300)).rejects.toMatchObject({ code: 'ETIMEDOUT', message: expect.stringMatching(/did not finish the handshake/) });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a server that hangs up mid-handshake: EIO naming it', async () => {
    const port = await fakeServer((s) => s.end(Buffer.from('NBDMAGIC')));
    await expect(open(port)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(/ended during the handshake/) });
  });

  it('an option reply of 4 GiB is refused before anything is allocated for it', async () => {
    const port = await fakeServer((s) => {
      s.write(greeting());
      s.once('data', () => {
        const reply = Buffer.alloc(20);
        reply.writeBigUInt64BE(0x3e889045565a9n, 0);
        reply.writeUInt32BE(8, 8); // NBD_OPT_STRUCTURED_REPLY
        reply.writeUInt32BE(1, 12);
        reply.writeUInt32BE(0xffffffff, 16);
        s.write(reply);
      });
    });
    await expect(open(port)).rejects.toMatchObject({ message: expect.stringMatching(/an option reply of 4294967295 bytes/) });
  });
});

const MiB = 1 << 20;

async function fake(options: Parameters<typeof fakeNbdServer>[0]): Promise<FakeNbdServer> {
  const f = await fakeNbdServer(options);
  fakes.push(f);
  return f;
}

function openWritable(port: number) {
  return NbdDevice.open({ connect: () => connectSocket({ host: '127.0.0.1', port }), exportName: '', name: `nbd://127.0.0.1:${port}/`, key: 'k', readOnly: false });
}

function sameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected)).toBe(0);
}

describe('a server announcing one-byte blocks (minimum = preferred = maximum = 1)', () => {
  it('a 1 MiB write and read go as one-byte requests, at most 16 in flight, made as they go; the data is whole', async () => {
    const server = await fake({ size: 4 * MiB, blockSizes: { min: 1, preferred: 1, max: 1 } });
    const device = await openWritable(server.port);
    const data = pattern(MiB, 7);
    const at = 4096 + 3;
    await device.write(at, data);
    sameBytes(server.data.subarray(at, at + data.length), data);
    const back = new Uint8Array(data.length);
    await device.read(at, back);
    sameBytes(back, data);
    await device.close();
    // One request per byte each way, never more than 16 of them waiting at the server.
    expect(server.counts.get(1)).toBe(MiB);
    expect(server.counts.get(0)).toBe(MiB);
    expect(server.maxInFlight).toBeGreaterThan(1);
    expect(server.maxInFlight).toBeLessThanOrEqual(16);
  }, 120_000);
});

describe('NBD URIs', () => {
  it("parses qemu-img's forms and the WebSocket bridge's", () => {
    expect(parseNbdUri('nbd://example.com/disk')).toMatchObject({ kind: 'tcp', host: 'example.com', port: 10809, exportName: 'disk' });
    expect(parseNbdUri('nbd+tcp://[::1]:1234/a%20b')).toMatchObject({ kind: 'tcp', host: '::1', port: 1234, exportName: 'a b' });
    expect(parseNbdUri('nbd+unix:///exp?socket=/run/x.sock')).toMatchObject({ kind: 'unix', socket: '/run/x.sock', exportName: 'exp' });
    expect(parseNbdUri('nbd+ws://localhost:5700/')).toMatchObject({ kind: 'ws', url: 'ws://localhost:5700/', exportName: '' });
    expect(parseNbdUri('nbd+wss://h:443/e')).toMatchObject({ kind: 'ws', url: 'wss://h:443/', exportName: 'e' });
  });

  it('refuses what is not one, saying what is wrong', () => {
    expect(() => parseNbdUri('nbd+unix:///e')).toThrow(/no socket=PATH/);
    expect(() => parseNbdUri('nbd+unix://host/e?socket=/s')).toThrow(/has no host/);
    expect(() => parseNbdUri('nbd+ws://host/e')).toThrow(/needs its port/);
    expect(() => parseNbdUri('nbd+foo://h/e')).toThrow(/unknown scheme nbd\+foo/);
    expect(() => parseNbdUri('nbd://h/e?tls=1')).toThrow(/unknown parameter tls/);
    expect(() => parseNbdUri('nbd://u:p@h/e')).toThrow(/passwords/);
    expect(() => parseNbdUri(`nbd://h/${'x'.repeat(5000)}`)).toThrow(/longer than 4096 bytes/);
  });

  it('one export, however it is spelt, has one key', () => {
    expect(nbdKey(parseNbdUri('nbd://HOST/e'))).toBe(nbdKey(parseNbdUri('nbd+tcp://host:10809/e')));
    expect(nbdKey(parseNbdUri('nbd://host/e'))).not.toBe(nbdKey(parseNbdUri('nbd://host/f')));
  });
});
