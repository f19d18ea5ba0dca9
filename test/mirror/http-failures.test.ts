/**
 * An HTTP source under failure: a real local server that drops
 * connections, answers 500 and 503, stalls past the read timeout, sends
 * short bodies, or changes the resource (a new ETag) midway. Under ignore
 * the mirror completes with the target equal to the source, or (the
 * resource changed) reports ESTALE and never completes; under report it
 * fails with the errno of the failure. Nothing claims success with wrong
 * data.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpDevice } from '../../src/block/http.js';
import { RawImage } from '../../src/format/raw.js';
import { MirrorJob } from '../../src/mirror/mirror-job.js';
import { pattern } from '../contract/device-contract.js';
import { blankRaw, equalBytes, recordEvents } from '../helpers/images.js';

const MiB = 1 << 20;
const SIZE = 4 * MiB;

type Failure = 'drop' | '500' | '503' | 'stall' | 'short' | 'change';

interface Served {
  url: string;
  server: Server;
  /** The bytes served now (changes when the resource changes). */
  content: () => Uint8Array;
  requests: number;
}

let served: Served | null = null;
afterEach(async () => {
  served?.server.closeAllConnections();
  await new Promise((r) => served?.server.close(r) ?? r(null));
  served = null;
});

/** Serves SIZE bytes; `failing(n)` says whether the n-th ranged GET (from 1) meets the failure. */
async function serve(failure: Failure, failing: (n: number) => boolean): Promise<Served> {
  let content = pattern(SIZE, 5);
  let etag = '"v1"';
  let n = 0;
  const server = createServer((req, res) => {
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'Accept-Ranges': 'bytes', 'Content-Length': SIZE, ETag: etag }).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) {
      res.writeHead(200, { 'Content-Length': SIZE, ETag: etag }).end(content);
      return;
    }
    n++;
    s.requests = n;
    const fails = failing(n);
    if (fails && failure === 'change' && etag === '"v1"') {
      // The resource is replaced on the server: new bytes, new ETag, from now on.
      content = pattern(SIZE, 6);
      etag = '"v2"';
    }
    const start = Number(m[1]);
    const end = Number(m[2]);
    if (req.headers['if-range'] && req.headers['if-range'] !== etag) {
      // RFC 9110: If-Range that no longer matches gets the whole, current representation.
      res.writeHead(200, { 'Content-Length': SIZE, ETag: etag }).end(content);
      return;
    }
    if (fails && failure === 'drop') return void req.socket.destroy();
    if (fails && (failure === '500' || failure === '503')) return void res.writeHead(Number(failure)).end('no');
    if (fails && failure === 'stall') return; // never answers
    const body = content.subarray(start, end + 1);
    res.writeHead(206, { 'Content-Range': `bytes ${start}-${end}/${SIZE}`, 'Content-Length': body.length, ETag: etag });
    if (fails && failure === 'short') {
      res.write(body.subarray(0, body.length >> 1));
      req.socket.destroy();
      return;
    }
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const s: Served = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.raw`, server, content: () => content, requests: 0 };
  served = s;
  return s;
}

async function mirror(s: Served, policy: 'ignore' | 'report', timeoutMs = 15_000) {
  const device = await HttpDevice.open(s.url, { idleTimeoutMs: 300 });
  const dst = blankRaw(SIZE);
  const job = await MirrorJob.create({
    source: new RawImage(device),
    target: dst.image,
    targetCreated: true,
    options: { sync: 'full', 'on-source-error': policy, 'buf-size': MiB, granularity: 256 * 1024 },
  });
  const rec = recordEvents(job);
  job.on((e) => e.event === 'BLOCK_JOB_READY' && job.complete());
  job.start();
  const timer = setTimeout(() => job.cancel(), timeoutMs);
  const result = await job.result;
  clearTimeout(timer);
  await device.close();
  const errors = rec.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').map((e) => (e.data as { errno?: string }).errno);
  return { outcome: result.outcome, errors, target: dst.device.bytes() };
}

const ERRNO: Record<Exclude<Failure, 'change'>, string> = { drop: 'EIO', '500': 'EIO', '503': 'EIO', stall: 'ETIMEDOUT', short: 'EIO' };

describe('an HTTP source under failure', () => {
  for (const failure of ['drop', '500', '503', 'stall', 'short'] as const) {
    it(`${failure}: under ignore the failed reads are retried and the copy completes equal to the source`, async () => {
      // Every third request fails, while the first twelve are made.
      const s = await serve(failure, (n) => n <= 12 && n % 3 === 0);
      const r = await mirror(s, 'ignore');
      expect(r.outcome).toBe('completed');
      expect(r.errors.length).toBeGreaterThan(0);
      expect(new Set(r.errors)).toEqual(new Set([ERRNO[failure]]));
      expect(equalBytes(r.target, s.content())).toBe(true);
    });

    it(`${failure}: under report the job fails with ${ERRNO[failure]}`, async () => {
      const s = await serve(failure, (n) => n === 2);
      const r = await mirror(s, 'report');
      expect(r.outcome).toBe('failed');
      expect(r.errors).toEqual([ERRNO[failure]]);
    });
  }

  it('a resource changed midway: under report the job fails with ESTALE', async () => {
    const s = await serve('change', (n) => n === 3);
    const r = await mirror(s, 'report');
    expect(r.outcome).toBe('failed');
    expect(r.errors).toEqual(['ESTALE']);
  });

  it('a resource changed midway: under ignore every read meets ESTALE, and the job never completes with mixed data', async () => {
    const s = await serve('change', (n) => n === 3);
    const r = await mirror(s, 'ignore', 2500);
    expect(r.outcome).toBe('cancelled');
    expect(r.errors.length).toBeGreaterThan(0);
    expect(new Set(r.errors)).toEqual(new Set(['ESTALE']));
  });
});
