/**
 * NBD transports under Node: a TCP or Unix socket (node:net), and a
 * WebSocket bridge through the `ws` package (Node 20 has no WebSocket of its
 * own without a flag).
 */
import { realpathSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { WebSocket as NodeWebSocket } from 'ws';
import { type Connect, type NbdTransport, ByteQueue, StreamEnded } from './transport.js';
import type { NbdUri } from './uri.js';
import { type WebSocketLike, connectWebSocket } from './ws-transport.js';

/** How long a TCP connect may take. */
const CONNECT_TIMEOUT_MS = 30_000;

export function connectSocket(where: { path: string } | { host: string; port: number }): Promise<NbdTransport> {
  const peer = 'path' in where ? where.path : `${where.host}:${where.port}`;
  return new Promise((resolve, reject) => {
    const socket: Socket = netConnect('path' in where ? { path: where.path } : { host: where.host, port: where.port });
    socket.setNoDelay(true);
    const incoming = new ByteQueue();
    let outgoing: Uint8Array[] = [];
    let outgoingBytes = 0;
    const sendOutgoing = () => {
      const chunks = outgoing;
      const bytes = outgoingBytes;
      outgoing = [];
      outgoingBytes = 0;
      if (bytes > 0 && !socket.destroyed) socket.write(Buffer.concat(chunks, bytes));
    };
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`no answer in ${CONNECT_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      const endpoint = endpointOf(where, socket);
      resolve({
        peer,
        ...(endpoint ? { endpoint } : {}),
        incoming,
        send: (data) => {
          if (socket.destroyed) return;
          // What is sent in one turn goes out as one buffer, copied at the turn's end, in one write
          // (sixteen small requests: one system call); the socket may drain long after.
          if (outgoing.length === 0) process.nextTick(sendOutgoing);
          outgoing.push(data);
          outgoingBytes += data.length;
        },
        close: () => {
          // What is queued goes first (a goodbye, NBD_CMD_DISC, sent just before).
          sendOutgoing();
          socket.destroy();
        },
      });
    });
    socket.on('data', (chunk: Buffer) => incoming.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
      incoming.end(new StreamEnded(err.message));
    });
    socket.once('close', () => incoming.end(new StreamEnded('the server closed the connection')));
  });
}

/**
 * A connected socket's peer, however it was named: a Unix socket by its real
 * path; a TCP peer by address and port, where every address of this machine
 * (loopback, 127.0.0.0/8, ::1, its interfaces' addresses) is one host, since
 * a server listening on all of them answers at each (two servers bound to
 * two loopback addresses on one port are taken for one: refused, never
 * confused).
 */
function endpointOf(where: { path: string } | { host: string; port: number }, socket: Socket): string | undefined {
  if ('path' in where) {
    try {
      return `unix:${realpathSync(where.path)}`;
    } catch {
      return undefined;
    }
  }
  const address = socket.remoteAddress?.replace(/^::ffff:(?=\d+\.)/i, '').toLowerCase();
  if (!address || socket.remotePort === undefined) return undefined;
  return `tcp:${isThisHost(address) ? 'this-host' : address}:${socket.remotePort}`;
}

function isThisHost(address: string): boolean {
  if (address.startsWith('127.') || address === '::1') return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address.toLowerCase() === address));
}

export function connectNodeWebSocket(url: string): Promise<NbdTransport> {
  return connectWebSocket(url, (u) => new NodeWebSocket(u) as unknown as WebSocketLike);
}

/** The transport a URI names, under Node. */
export function nodeConnector(uri: NbdUri): Connect {
  switch (uri.kind) {
    case 'tcp':
      return () => connectSocket({ host: uri.host, port: uri.port });
    case 'unix':
      return () => connectSocket({ path: uri.socket });
    case 'ws':
      return () => connectNodeWebSocket(uri.url);
  }
}
