/**
 * A static file server for browser tests: serves files from a directory
 * with Range requests and CORS (the page is on another origin), and can be
 * told to fail some requests.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { openSync, readSync, closeSync, statSync } from 'node:fs';
import { join, normalize } from 'node:path';
import type { AddressInfo } from 'node:net';

export interface FileServer {
  url(name: string): string;
  close(): Promise<void>;
  /** Ranged GETs answered so far (failed ones included). */
  rangedRequests: number;
  failures: number;
}

export interface FileServerOptions {
  /** Return a status (or 'reset') to fail this ranged GET. */
  fail?: (request: { path: string; start: number; end: number; count: number }) => number | 'reset' | null;
  /** Send CORS headers (default true): without them a page on another origin may not read the answers. */
  cors?: boolean;
  /** Milliseconds to wait before answering each ranged GET (a slow server). */
  delayMs?: () => number;
}

const CORS_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Headers': 'Range, If-Range',
  'Access-Control-Expose-Headers': 'Accept-Ranges, Content-Range, Content-Length, ETag',
};

export async function startFileServer(dir: string, options: FileServerOptions = {}): Promise<FileServer> {
  let ranged = 0;
  let failures = 0;
  const CORS = options.cors === false ? {} : CORS_HEADERS;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...CORS, 'Access-Control-Allow-Methods': 'GET, HEAD' }).end();
      return;
    }
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^\/+/, '');
    if (path.includes('..')) {
      res.writeHead(400, CORS).end();
      return;
    }
    let size: number;
    try {
      size = statSync(join(dir, path)).size;
    } catch {
      res.writeHead(404, CORS).end();
      return;
    }
    const headers = { ...CORS, 'Accept-Ranges': 'bytes' };
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'Content-Length': size }).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m ? Math.min(Number(m[2]), size - 1) : size - 1;
    if (m) {
      ranged++;
      const failure = options.fail?.({ path, start, end, count: ranged });
      if (failure) {
        failures++;
        if (failure === 'reset') req.socket.destroy();
        else res.writeHead(failure, CORS).end();
        return;
      }
    }
    const delay = m ? (options.delayMs?.() ?? 0) : 0;
    if (delay > 0) {
      setTimeout(() => send(res, path, start, end, size, m !== null, headers), delay);
      return;
    }
    send(res, path, start, end, size, m !== null, headers);
  };
  const send = (res: ServerResponse, path: string, start: number, end: number, size: number, ranged: boolean, headers: Record<string, string | number>) => {
    if (res.destroyed) return;
    const length = Math.max(0, end - start + 1);
    const body = Buffer.alloc(length);
    const fd = openSync(join(dir, path), 'r');
    try {
      readSync(fd, body, 0, length, start);
    } finally {
      closeSync(fd);
    }
    res
      .writeHead(ranged ? 206 : 200, { ...headers, 'Content-Length': length, ...(ranged ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}) })
      .end(body);
  };
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
    get rangedRequests() {
      return ranged;
    },
    get failures() {
      return failures;
    },
  };
}
