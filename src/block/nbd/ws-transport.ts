/**
 * The NBD byte stream over a WebSocket: each binary message carries the
 * next bytes, each way (websockify's binary mode, as noVNC reaches VNC
 * servers). The browser's WebSocket, or any with its shape (the command
 * line passes the `ws` package's under Node).
 */
import { type NbdTransport, ByteQueue, StreamEnded } from './transport.js';

/** The part of the WebSocket interface used here. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/** How long an opening WebSocket may take before the connect fails. */
const OPEN_TIMEOUT_MS = 30_000;

export function connectWebSocket(url: string, create: WebSocketFactory = (u) => new WebSocket(u) as unknown as WebSocketLike): Promise<NbdTransport> {
  return new Promise((resolve, reject) => {
    let socket: WebSocketLike;
    try {
      socket = create(url);
    } catch (err) {
      reject(Object.assign(new Error(`${url}: ${(err as Error).message}`), { code: 'EINVAL' }));
      return;
    }
    socket.binaryType = 'arraybuffer';
    const incoming = new ByteQueue();
    let opened = false;
    const timer = setTimeout(() => {
      if (opened) return;
      socket.close();
      reject(Object.assign(new Error(`${url}: the WebSocket did not open in ${OPEN_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' }));
    }, OPEN_TIMEOUT_MS);
    socket.onopen = () => {
      opened = true;
      clearTimeout(timer);
      resolve({
        peer: url,
        incoming,
        send: (data) => {
          if (socket.readyState === 1) socket.send(data);
        },
        close: () => socket.close(),
      });
    };
    socket.onmessage = (event) => {
      const data = event.data;
      if (data instanceof ArrayBuffer) incoming.push(new Uint8Array(data));
      else if (ArrayBuffer.isView(data)) incoming.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      else incoming.end(new StreamEnded(`${url}: a text message on a binary stream (is this a websockify bridge in binary mode?)`));
    };
    socket.onerror = () => {
      // The close that follows says why; a WebSocket's error event carries no reason.
    };
    socket.onclose = (event) => {
      clearTimeout(timer);
      const why = `the WebSocket closed (code ${event.code}${event.reason ? `: ${event.reason}` : ''})`;
      if (!opened) reject(Object.assign(new Error(`${url}: ${why}; is a WebSocket bridge listening there?`), { code: 'EIO' }));
      incoming.end(new StreamEnded(why));
    };
  });
}
