/**
 * qemu-img's NBD URIs, and one for a WebSocket bridge:
 *
 *   nbd://HOST[:PORT]/EXPORT              TCP (port 10809 by default)
 *   nbd+tcp://HOST[:PORT]/EXPORT          the same
 *   nbd+unix:///EXPORT?socket=PATH        a Unix socket
 *   nbd+ws://HOST:PORT/EXPORT             NBD's bytes in WebSocket binary messages (websockify)
 *   nbd+wss://HOST:PORT/EXPORT            the same over TLS
 *
 * The export name is the path without its first slash, percent-decoded
 * (empty: the server's default export).
 */

export type NbdUri =
  | { kind: 'tcp'; host: string; port: number; exportName: string; uri: string }
  | { kind: 'unix'; socket: string; exportName: string; uri: string }
  | { kind: 'ws'; url: string; exportName: string; uri: string };

export const NBD_DEFAULT_PORT = 10809;

export class NbdUriError extends Error {
  override name = 'NbdUriError';
  readonly code = 'EINVAL';
}

const SCHEMES = ['nbd:', 'nbd+tcp:', 'nbd+unix:', 'nbd+ws:', 'nbd+wss:'];

export { isNbdUri } from '../../qapi/nbd.js';

export function parseNbdUri(text: string): NbdUri {
  const bad = (why: string) => new NbdUriError(`'${text}' is not an NBD URI: ${why} (expected nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH or nbd+ws://HOST:PORT/EXPORT)`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad('it does not parse as a URI');
  }
  const scheme = url.protocol.toLowerCase();
  if (!SCHEMES.includes(scheme)) throw bad(`unknown scheme ${scheme.replace(/:$/, '')}`);
  let exportName: string;
  try {
    exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  } catch {
    throw bad('the export name has a bad %-escape');
  }
  if (new TextEncoder().encode(exportName).length > 4096) throw bad('the export name is longer than 4096 bytes');
  if (url.username || url.password) throw bad('user names and passwords are not supported');
  const params = [...url.searchParams.keys()];
  if (scheme === 'nbd+unix:') {
    if (url.host) throw bad('a Unix socket URI has no host (three slashes: nbd+unix:///EXPORT?socket=PATH)');
    const socket = url.searchParams.get('socket');
    if (!socket) throw bad('no socket=PATH');
    const other = params.filter((p) => p !== 'socket');
    if (other.length > 0) throw bad(`unknown parameter ${other[0]}`);
    return { kind: 'unix', socket, exportName, uri: text };
  }
  if (params.length > 0) throw bad(`unknown parameter ${params[0]}`);
  if (!url.hostname) throw bad('no host');
  if (scheme === 'nbd+ws:' || scheme === 'nbd+wss:') {
    if (!url.port) throw bad('a WebSocket bridge needs its port');
    return { kind: 'ws', url: `${scheme === 'nbd+wss:' ? 'wss' : 'ws'}://${url.host}/`, exportName, uri: text };
  }
  const port = url.port ? Number(url.port) : NBD_DEFAULT_PORT;
  return { kind: 'tcp', host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port, exportName, uri: text };
}

/** The same export, however it was spelt: a key for identity checks (a source that is its own target). */
export function nbdKey(uri: NbdUri, resolvePath: (path: string) => string = (p) => p): string {
  switch (uri.kind) {
    case 'tcp':
      return `nbd:tcp:${uri.host.toLowerCase()}:${uri.port}/${uri.exportName}`;
    case 'unix':
      return `nbd:unix:${resolvePath(uri.socket)}/${uri.exportName}`;
    case 'ws':
      return `nbd:ws:${uri.url.toLowerCase()}${uri.exportName}`;
  }
}
