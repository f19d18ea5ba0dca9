/**
 * NBD exports in the worker. A page reaches an NBD server only through a
 * WebSocket bridge (websockify in front of qemu-nbd or nbdkit); an export
 * is named by its URI, nbd+ws://HOST:PORT/EXPORT (nbd+wss:// over TLS), as
 * the command line names it. An export can be a job's source, be imported,
 * or be a mirror's target: it exists on its server, so it is never created,
 * resized or removed here, and it has no lock and no modification time, so
 * a job with an export is never resumed: one writing an export keeps no
 * checkpoint, one reading an export keeps one only to mark its target
 * incomplete if it is cut off.
 *
 * Failures to reach one become WorkerErrors that say which step failed:
 * nothing listens at the WebSocket URL, the bridge has no NBD server behind
 * it, the server has no such export, the export is read-only.
 */
import { BlockError } from '../block/block-device.js';
import type { FileStore } from '../block/file-store.js';
import { NbdHandshakeError } from '../block/nbd/connection.js';
import type { NbdDevice } from '../block/nbd/device.js';
import { TFLAG } from '../block/nbd/protocol.js';
import { NbdAwareStore } from '../block/nbd/store.js';
import type { Connect } from '../block/nbd/transport.js';
import { type NbdUri, isNbdUri, nbdKey, parseNbdUri } from '../block/nbd/uri.js';
import { connectWebSocket } from '../block/nbd/ws-transport.js';
import { openImage } from '../format/open.js';
import { WorkerError } from '../shared/worker-error.js';

/** What a page learns of an export it connected to. */
export interface NbdExportInfo {
  /** The export's name for the worker: nbd+ws://HOST:PORT/EXPORT. */
  uri: string;
  /** The bridge's WebSocket URL, as the worker connects to it. */
  url: string;
  exportName: string;
  /** How its bytes are read. */
  format: 'raw' | 'qcow2';
  /** The export's bytes. */
  size: number;
  /** The disk's size as `format` reads it (the export's size for raw). */
  virtualSize: number;
  /** The server serves it read-only: a source, never a target. */
  readOnly: boolean;
}

/** The bridge's WebSocket did not open: nothing listens there, or it refused. */
class BridgeUnreachable extends Error {
  override name = 'BridgeUnreachable';
  readonly code: string;
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super((cause as Error).message, { cause });
    this.code = String((cause as { code?: unknown }).code ?? 'EIO');
  }
}

/** Connects through the WebSocket a URI names (a page has no TCP or Unix sockets). */
function webSocketConnector(uri: NbdUri): Connect {
  return async () => {
    if (uri.kind !== 'ws') throw new BlockError('ENOTSUP', 'open', 0, 0, `${uri.uri}: a page reaches NBD servers only through a WebSocket bridge (nbd+ws://HOST:PORT/EXPORT)`);
    try {
      return await connectWebSocket(uri.url);
    } catch (err) {
      throw new BridgeUnreachable(uri.url, err);
    }
  };
}

/** `files` with NBD exports beside them: a name that is an nbd+ws:// URI opens an export. */
export function withExports(files: FileStore): NbdAwareStore {
  return new NbdAwareStore(files, webSocketConnector);
}

type WsUri = Extract<NbdUri, { kind: 'ws' }>;

/** Checks that `name` is an NBD URI a page can reach (nbd+ws or nbd+wss); returns it parsed. */
export function checkExportUri(name: string): WsUri {
  let uri: NbdUri;
  try {
    uri = parseNbdUri(name);
  } catch (err) {
    throw new WorkerError('nbd-bad-address', (err as Error).message);
  }
  if (uri.kind !== 'ws') throw new WorkerError('nbd-bad-address', `${name}: a page reaches NBD servers only through a WebSocket bridge: name the export nbd+ws://HOST:PORT/EXPORT`);
  return uri;
}

/** The same export, however its URI is spelt; null for a name that is no NBD URI. */
export function exportKey(name: string): string | null {
  return isNbdUri(name) ? nbdKey(checkExportUri(name)) : null;
}

/**
 * The URI of export `exportName` behind the bridge at `wsUrl` (ws:// or
 * wss://, HOST:PORT and nothing else: the export is named on its own).
 */
export function exportUri(wsUrl: string, exportName: string): string {
  const example = 'such as ws://localhost:5701';
  let url: URL;
  try {
    url = new URL(wsUrl);
  } catch {
    throw new WorkerError('nbd-bad-address', `"${wsUrl}" is not a URL: type the WebSocket address of the bridge, ${example}`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new WorkerError('nbd-bad-address', `${wsUrl} is not a WebSocket URL: it starts with ws:// or wss://, ${example}`);
  }
  if (url.pathname.replace(/^\/$/, '') || url.search || url.hash || url.username || url.password) {
    throw new WorkerError('nbd-bad-address', `${wsUrl}: give the bridge's address only (${url.protocol}//HOST:PORT), without a path or query; the export's name goes in its own field`);
  }
  const port = url.port || (url.protocol === 'wss:' ? '443' : '80');
  const uri = `nbd+${url.protocol.slice(0, -1)}://${url.hostname}:${port}/${encodeURIComponent(exportName)}`;
  checkExportUri(uri);
  return uri;
}

/**
 * The error a person should read when opening export `uri` failed: which
 * step failed, by the classes and codes of the layers below. Anything else
 * is returned as it is.
 */
export function nbdOpenError(err: unknown, uri: string): unknown {
  if (!(err instanceof BlockError) || err.op !== 'open') return err;
  const { url, exportName } = checkExportUri(uri);
  for (let cause: unknown = err.cause, depth = 0; cause && depth < 4; cause = (cause as { cause?: unknown }).cause, depth++) {
    if (cause instanceof BridgeUnreachable) {
      // The browser would not even try (an insecure ws:// from a page served over https, a bad address).
      if (cause.code === 'EINVAL') return new WorkerError('nbd-bad-address', `the browser refused to open ${url}: ${cause.message.replace(/^\S+: /, '')}`);
      const when = cause.code === 'ETIMEDOUT' ? ' within 30 s' : '';
      return new WorkerError('nbd-unreachable', `nothing answered at ${url}${when}: is a WebSocket bridge (websockify) listening there?`);
    }
    if (cause instanceof NbdHandshakeError) {
      if (cause.code === 'ENOENT') {
        const named = exportName === '' ? 'default export (an empty name)' : `export named "${exportName}"`;
        return new WorkerError('nbd-no-export', `the NBD server behind ${url} has no ${named}: check the export's name`);
      }
      if (cause.code === 'EIO') {
        const why = cause.message.replace(/^\S+: /, '');
        return new WorkerError('nbd-no-server', `the bridge at ${url} answered, but no NBD server spoke through it (${why}): is the NBD server behind the bridge running?`);
      }
    }
  }
  if (err.code === 'EROFS') return new WorkerError('nbd-read-only', `${uri} is a read-only export: it can be a mirror's source or be imported, not a mirror's target`);
  return err;
}

/** Opens export `uri` read-only through `store`, its failure in words (nbdOpenError). */
export async function openExportReadOnly(store: NbdAwareStore, uri: string): Promise<NbdDevice> {
  checkExportUri(uri);
  try {
    return await store.openExport(uri, true);
  } catch (err) {
    throw nbdOpenError(err, uri);
  }
}

/** Connects to an export, reads what it is, and lets go of it. */
export async function probeExport(store: NbdAwareStore, wsUrl: string, exportName: string, format: 'raw' | 'qcow2'): Promise<NbdExportInfo> {
  const uri = exportUri(wsUrl, exportName);
  const device = await openExportReadOnly(store, uri);
  try {
    let virtualSize = device.size;
    if (format === 'qcow2') {
      // The image closes the device too; closing it twice is harmless.
      const image = await openImage(device, { name: uri, format: 'qcow2', readOnly: true });
      virtualSize = (await image.info()).virtualSize;
      await image.close();
    }
    return { uri, url: checkExportUri(uri).url, exportName, format, size: device.size, virtualSize, readOnly: (device.info.flags & TFLAG.READ_ONLY) !== 0 };
  } finally {
    await device.close().catch(() => {});
  }
}
