/**
 * Images kept in OPFS, in one directory: listing, creating, deleting and
 * opening them as devices. Backing files are looked up in the same directory.
 */
import { BlockError } from '../block/block-device.js';
import { OpfsDevice } from '../block/opfs.js';
import { type FormatName, type ImageFormat, FormatError } from '../format/image-format.js';
import { createImage, openImage, type BackingResolver } from '../format/open.js';
import { probeFormat } from '../format/probe.js';
import { writeDemoImage, DEMO_IMAGE_BYTES } from '../format/demo.js';
import { IMAGE_DIRECTORY } from './paths.js';

export interface ImageEntry {
  name: string;
  format: FormatName;
  virtualSize: number;
  fileSize: number;
  backingFile?: string;
  /** Set when the image could not be inspected (in use by a job, or corrupt). */
  note?: string;
}

const DIRECTORY = IMAGE_DIRECTORY;
const SHA256_LIMIT = 512 << 20;

export function checkImageName(name: string): string {
  if (typeof name !== 'string' || name.length === 0) throw new FormatError('Image name is empty', 'name');
  if (name.length > 200) throw new FormatError(`Image name "${name.slice(0, 20)}…" is longer than 200 characters`, 'name');
  if (/[/\\\0]/.test(name) || name === '.' || name === '..') {
    throw new FormatError(`Image name "${name}" may not contain / or \\ or be . or ..`, 'name');
  }
  return name;
}

export class ImageStore {
  private dir: FileSystemDirectoryHandle | undefined;

  async directory(): Promise<FileSystemDirectoryHandle> {
    if (!this.dir) {
      const root = await navigator.storage.getDirectory();
      this.dir = await root.getDirectoryHandle(DIRECTORY, { create: true });
    }
    return this.dir;
  }

  async exists(name: string): Promise<boolean> {
    try {
      await (await this.directory()).getFileHandle(checkImageName(name));
      return true;
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return false;
      throw err;
    }
  }

  async list(): Promise<ImageEntry[]> {
    const dir = await this.directory();
    const out: ImageEntry[] = [];
    for await (const [name, handle] of dir as unknown as AsyncIterable<[string, FileSystemHandle]>) {
      if (handle.kind !== 'file') continue;
      out.push(await this.describe(name));
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async describe(name: string): Promise<ImageEntry> {
    const dir = await this.directory();
    const file = await (await dir.getFileHandle(name)).getFile();
    const entry: ImageEntry = { name, format: 'raw', virtualSize: file.size, fileSize: file.size };
    try {
      const device = await OpfsDevice.open(dir, name, { readOnly: true });
      let image: ImageFormat | undefined;
      try {
        entry.format = await probeFormat(device);
        image = await openImage(device, { format: entry.format, name, resolve: await this.resolver() });
        const info = await image.info();
        entry.virtualSize = info.virtualSize;
        if (info.backingFile) entry.backingFile = info.backingFile;
      } finally {
        // Closing the image closes its backing chain too.
        await (image ?? device).close();
      }
    } catch (err) {
      entry.note = err instanceof BlockError && err.code === 'EBUSY' ? 'in use' : (err as Error).message;
    }
    return entry;
  }

  /** Backing files live in the same directory, named as the image's header names them. */
  private async resolver(): Promise<BackingResolver> {
    const dir = await this.directory();
    return async (backing, o) => {
      // A path names the file by its last part: everything lives in one directory here.
      const base = backing.split(/[/\\]/).pop() ?? backing;
      return { device: await OpfsDevice.open(dir, checkImageName(base), { readOnly: o.readOnly }), name: base };
    };
  }

  /** Opens an image for a job; the caller closes it. */
  async open(name: string, options: { readOnly?: boolean; format?: FormatName } = {}): Promise<ImageFormat> {
    const dir = await this.directory();
    const device = await OpfsDevice.open(dir, checkImageName(name), { readOnly: options.readOnly ?? false });
    try {
      return await openImage(device, { name, ...(options.format ? { format: options.format } : {}), resolve: await this.resolver() });
    } catch (err) {
      await device.close();
      throw err;
    }
  }

  /** Creates a blank image (qcow2 with QEMU's defaults, or sparse raw); refuses to overwrite one. */
  async create(name: string, format: FormatName, virtualSize: number, backing?: { file: string; format?: FormatName }): Promise<ImageFormat> {
    if (await this.exists(name)) throw new BlockError('EEXIST', 'open', 0, 0, `an image named "${name}" already exists`);
    const dir = await this.directory();
    const device = await OpfsDevice.open(dir, checkImageName(name), { create: true });
    try {
      const onBacking = backing ? { backingFile: backing.file, ...(backing.format ? { backingFormat: backing.format } : {}) } : {};
      return await createImage(device, { format, size: virtualSize, ...onBacking }, { name, resolve: await this.resolver() });
    } catch (err) {
      await device.close().catch(() => {});
      await this.remove(name).catch(() => {});
      throw err;
    }
  }

  async createDemo(name = 'demo.raw'): Promise<ImageEntry> {
    if (await this.exists(name)) await this.remove(name);
    const image = await this.create(name, 'raw', DEMO_IMAGE_BYTES);
    try {
      await writeDemoImage(image);
    } finally {
      await image.close();
    }
    return this.describe(name);
  }

  async remove(name: string): Promise<void> {
    const dir = await this.directory();
    try {
      await dir.removeEntry(checkImageName(name));
    } catch (err) {
      const n = (err as Error).name;
      const code = n === 'NotFoundError' ? 'ENOENT' : n === 'NoModificationAllowedError' ? 'EBUSY' : 'EIO';
      throw new BlockError(code, 'open', 0, 0, `cannot delete "${name}": ${(err as Error).message}`, { cause: err });
    }
  }

  /** SHA-256 of an image file's bytes, read in pieces (for checks in tests and the UI). */
  async sha256(name: string): Promise<string> {
    const dir = await this.directory();
    const file = await (await dir.getFileHandle(checkImageName(name))).getFile();
    if (file.size > SHA256_LIMIT) {
      throw new BlockError('EFBIG', 'read', 0, file.size, `hashing reads the image into memory; "${name}" is over 512 MiB`);
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  }
}
