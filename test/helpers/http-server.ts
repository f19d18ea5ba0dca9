/** A local HTTP server for range-read tests, with knobs to misbehave. */
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RangeServerOptions {
  /** Answer ranged GETs with the whole body and 200. */
  ignoreRange?: boolean;
  /** Do not advertise Accept-Ranges on HEAD (forces the one-byte probe). */
  noAcceptRanges?: boolean;
  /** Decides, per ranged GET, to fail with this status (or destroy the socket for 'reset'). */
  fail?: (request: { start: number; end: number; count: number }) => number | 'reset' | null;
  etag?: string;
}

export interface RangeServer {
  url: string;
  /** Replaces the served bytes (and the ETag if given). */
  setContent(body: Uint8Array, etag?: string): void;
  close(): Promise<void>;
  requests: number;
}

export async function startRangeServer(body: Uint8Array, options: RangeServerOptions = {}): Promise<RangeServer> {
  let content = body;
  let etag = options.etag;
  let count = 0;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    count++;
    const headers: Record<string, string | number> = {};
    if (etag) headers['ETag'] = etag;
    if (!options.noAcceptRanges) headers['Accept-Ranges'] = 'bytes';
    if (req.url === '/missing') {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'Content-Length': content.length }).end();
      return;
    }
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (!range || options.ignoreRange || (ifRange && ifRange !== etag)) {
      res.writeHead(200, { ...headers, 'Content-Length': content.length }).end(content);
      return;
    }
    const start = Number(range[1]);
    const end = Math.min(Number(range[2]), content.length - 1);
    if (start >= content.length) {
      res.writeHead(416, { 'Content-Range': `bytes */${content.length}` }).end();
      return;
    }
    const failure = options.fail?.({ start, end, count });
    if (failure === 'reset') {
      req.socket.destroy();
      return;
    }
    if (failure) {
      res.writeHead(failure).end();
      return;
    }
    res
      .writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${content.length}`, 'Content-Length': end - start + 1 })
      .end(content.subarray(start, end + 1));
  };
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/image`,
    setContent(next, nextEtag) {
      content = next;
      if (nextEtag) etag = nextEtag;
    },
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
    get requests() {
      return count;
    },
  };
}
