/**
 * A job's source, however it is reached: an image in OPFS (its backing
 * chain with it), a file the page picked, a URL read with Range requests,
 * or an NBD export behind a WebSocket bridge.
 */
import { BlobDevice } from '../block/blob.js';
import { type FileIdentity, BlockError } from '../block/block-device.js';
import { HttpDevice } from '../block/http.js';
import type { NbdAwareStore } from '../block/nbd/store.js';
import type { OpfsFileStore } from '../block/opfs-store.js';
import { type OpenedImage, WritableOnDemand, openChain } from '../format/image-access.js';
import type { ImageFormat } from '../format/image-format.js';
import { type ImageStamp, stampChain, stampImage } from '../format/image-stamp.js';
import { openImage } from '../format/open.js';
import { QCOW2_MAGIC, probeFormat } from '../format/probe.js';
import { RawImage } from '../format/raw.js';
import type { SourceRef } from '../shared/source-ref.js';
import { WorkerError } from '../shared/worker-error.js';
import type { ImageFacts } from './image-store.js';
import { openExportReadOnly } from './nbd.js';

export interface JobSource {
  /** What the job reads (and a guest writes, for an image in OPFS). */
  image: ImageFormat;
  /** The source's name, for messages. */
  name: string;
  /** For an image in OPFS: its chain as open now. */
  opened: (() => OpenedImage) | null;
  /** The stamps of the source's chain now (for a checkpoint: an NBD export has none). */
  stamps(): Promise<ImageStamp[]>;
}

/**
 * Opens a job's source. An image in OPFS opens read-only with shared locks
 * (backing files too) and is reopened read-write on a guest's first write;
 * a picked file (found by `pickedFile`), a URL or an NBD export (through
 * `exports`) is read-only.
 */
export async function openJobSource(ref: SourceRef, store: OpfsFileStore, pickedFile: (name: string) => File | undefined, exports: NbdAwareStore): Promise<JobSource> {
  if (ref.kind === 'nbd') return openExportSource(ref.uri, ref.format ?? 'raw', exports);
  if (ref.kind === 'opfs') {
    const open = (readOnly: boolean) => openChain(store, ref.name, { readOnly });
    const image = new WritableOnDemand(await open(true), open);
    return { image, name: ref.name, opened: () => image.current, stamps: () => stampChain(store, image.current, true) };
  }
  let image: ImageFormat;
  let identity: FileIdentity;
  let name: string;
  if (ref.kind === 'file') {
    const file = pickedFile(ref.name);
    if (!file) throw new WorkerError('picked-file-gone', `the picked file "${ref.name}" is gone; pick it again`);
    const device = new BlobDevice(file, ref.name);
    image = ref.raw ? new RawImage(device) : await openImage(device, { name: ref.name });
    identity = { key: `file:${ref.name}`, size: file.size, modifiedMs: file.lastModified };
    name = ref.name;
  } else {
    const device = await openUrl(ref.url);
    try {
      image = ref.raw ? new RawImage(device) : await openImage(device, { name: ref.url, resolve: (n) => openUrl(new URL(n, ref.url).href) });
    } catch (err) {
      await device.close().catch(() => {});
      throw err;
    }
    identity = { key: `url:${ref.url}`, size: device.size, modifiedMs: 0 };
    name = ref.url;
  }
  // Nothing here writes these: stamped once.
  try {
    const stamp = await stampImage(image, name, identity, { digest: true });
    return { image, name, opened: null, stamps: async () => [stamp] };
  } catch (err) {
    await image.close().catch(() => {});
    throw err;
  }
}

/**
 * An export as a source, read as `format` (raw: its bytes as they are). It
 * has no lock and no modification time: nothing could tell whether it
 * changed while a job was stopped, so it is never stamped for a checkpoint.
 */
async function openExportSource(uri: string, format: 'raw' | 'qcow2', exports: NbdAwareStore): Promise<JobSource> {
  const device = await openExportReadOnly(exports, uri);
  try {
    // A qcow2 image on an export can have no backing file: a relative name means nothing there.
    const image = format === 'qcow2' ? await openImage(device, { name: uri, format: 'qcow2', readOnly: true }) : new RawImage(device);
    // Stamped for the record that marks an interrupted copy (an export is never resumed: it has no modification time).
    const stamp = await stampImage(image, uri, await device.identity(), { digest: false });
    return { image, name: uri, opened: null, stamps: async () => [stamp] };
  } catch (err) {
    await device.close().catch(() => {});
    throw err;
  }
}

/**
 * Opens a URL, saying what stands in the way when it cannot be read: the
 * browser refused (no CORS headers, or no server at all: a page cannot
 * tell which), or the server ignores Range requests.
 */
async function openUrl(url: string): Promise<HttpDevice> {
  try {
    return await HttpDevice.open(url);
  } catch (err) {
    if (err instanceof BlockError && err.cause instanceof TypeError) {
      throw new WorkerError('url-unreachable', `${url} could not be read: the server is unreachable, or it does not allow this page to read it (CORS)`);
    }
    if (err instanceof BlockError && err.code === 'ENOTSUP') throw new WorkerError('url-no-range', `${url}: ${err.detail}`);
    throw err;
  }
}

/**
 * What an image copied byte for byte (an import) holds, from its first
 * bytes: a qcow2 image (its virtual size from the header), another format
 * probing finds (vpc, vdi, vmdk: opened to read its virtual size), or raw.
 */
export async function contentFacts(image: ImageFormat): Promise<ImageFacts> {
  if (image.size >= 32) {
    const head = new Uint8Array(32);
    await image.read(0, head);
    const view = new DataView(head.buffer);
    if (view.getUint32(0, false) === QCOW2_MAGIC) {
      return { format: 'qcow2', virtualSize: view.getUint32(24, false) * 2 ** 32 + view.getUint32(28, false) };
    }
    const format = await probeFormat(image);
    if (format !== 'raw') {
      // Opened over the bytes without taking them: closing it leaves the import's image open.
      const opened = await openImage({ size: image.size, readOnly: true, read: (o, into) => image.read(o, into), write: async () => {}, flush: async () => {}, close: async () => {} }, { format, readOnly: true }).catch(() => null);
      if (opened) return { format, virtualSize: opened.size };
    }
  }
  return { format: 'raw', virtualSize: image.size };
}
