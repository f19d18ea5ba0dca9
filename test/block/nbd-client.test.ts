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
import { ReadCoverage } from '../../src/block/nbd/coverage.js';
import { type FakeNbdServer, REPLY_TYPE, fakeNbdServer } from '../helpers/fake-nbd-server.js';
import { randInt, rng } from '../helpers/random.js';
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
  // 256 KiB: a quarter million requests each way show the bound as well as a million did (sending them all at once, as before the fix, put that many in flight), in a quarter of the time.
  it('a 256 KiB write and read go as one-byte requests, at most 16 in flight, made as they go; the data is whole', async () => {
    const server = await fake({ size: 4 * MiB, blockSizes: { min: 1, preferred: 1, max: 1 } });
    const device = await openWritable(server.port);
    const BYTES = 256 * 1024;
    const data = pattern(BYTES, 7);
    const at = 4096 + 3;
    await device.write(at, data);
    sameBytes(server.data.subarray(at, at + data.length), data);
    const back = new Uint8Array(data.length);
    await device.read(at, back);
    sameBytes(back, data);
    await device.close();
    // One request per byte each way, never more than 16 of them waiting at the server.
    expect(server.counts.get(1)).toBe(BYTES);
    expect(server.counts.get(0)).toBe(BYTES);
    expect(server.maxInFlight).toBeGreaterThan(1);
    expect(server.maxInFlight).toBeLessThanOrEqual(16);
  }, 120_000);
});

describe('a read answered in chunks', () => {
  function hole(offset: number, bytes: number): Uint8Array {
    const payload = new Uint8Array(12);
    const v = new DataView(payload.buffer);
    v.setBigUint64(0, BigInt(offset));
    v.setUint32(8, bytes);
    return payload;
  }

  it('the same chunk twice is refused as a broken protocol (EIO), not taken for the whole read', async () => {
    const server = await fake({
      size: MiB,
      answerRead: (r, replies) => {
        replies.data(r.cookie, r.offset, r.length / 2, false);
        replies.data(r.cookie, r.offset, r.length / 2, true);
      },
    });
    server.data.set(pattern(MiB, 3));
    const device = await openWritable(server.port);
    const into = new Uint8Array(64 * 1024);
    await expect(device.read(0, into)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(/broke the protocol \(data at 0 \(\+32768\) overlapping what an earlier chunk/) });
    await device.close();
  });

  it('chunks out of order, data and a hole, that cover the read once each: the read is whole', async () => {
    const server = await fake({
      size: MiB,
      answerRead: (r, replies) => {
        const q = r.length / 4;
        replies.data(r.cookie, r.offset + 2 * q, 2 * q, false);
        replies.chunk(r.cookie, REPLY_TYPE.OFFSET_HOLE, hole(r.offset + q, q), false);
        replies.data(r.cookie, r.offset, q, true);
      },
    });
    server.data.set(pattern(MiB, 5));
    server.data.fill(0, 16 * 1024, 32 * 1024);
    const device = await openWritable(server.port);
    const into = new Uint8Array(64 * 1024).fill(0xee);
    await device.read(0, into);
    sameBytes(into, server.data.subarray(0, 64 * 1024));
    await device.close();
  });

  it('coverage: every split and order of a read is whole; any byte answered twice is caught', () => {
    const next = rng(21);
    for (let round = 0; round < 300; round++) {
      const length = 1 + randInt(next, 200);
      // Cut [0, length) into pieces, then shuffle them.
      const cuts = [...new Set([0, length, ...Array.from({ length: randInt(next, 12) }, () => randInt(next, length))])].sort((a, b) => a - b);
      const pieces = cuts.slice(1).map((end, i) => [cuts[i]!, end - cuts[i]!] as const);
      for (let i = pieces.length - 1; i > 0; i--) {
        const j = randInt(next, i + 1);
        [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
      }
      const whole = new ReadCoverage(length);
      for (const [at, bytes] of pieces) expect(whole.add(at, bytes)).toBe(true);
      expect(whole.whole).toBe(true);
      // The same pieces with one byte range answered again somewhere.
      const twice = new ReadCoverage(length);
      const stop = randInt(next, pieces.length);
      for (const [at, bytes] of pieces.slice(0, stop + 1)) twice.add(at, bytes);
      const [at, bytes] = pieces[stop]!;
      const from = at + randInt(next, bytes);
      expect(twice.add(from, 1 + randInt(next, at + bytes - from))).toBe(false);
    }
  });
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
