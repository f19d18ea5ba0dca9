/**
 * Images kept in OPFS, in one directory: listing, creating, deleting,
 * reading out (downloads) and hashing them. Everything that opens or makes
 * an image goes through an OpfsFileStore and image-access.ts, so it is
 * locked (Web Locks) and a new image appears under its name only once it is
 * whole; what reads a whole file out holds a shared lock while it does.
 *
 * The list reads each image's header from a snapshot of the file
 * (getFile()), without a lock, as `qemu-img info -U` does: listing never
 * stands in the way of a job, and a snapshot read that meets a write fails
 * (NotReadableError) instead of returning torn bytes.
 */
import { BlobDevice } from '../block/blob.js';
import { type LockHolder, BlockError } from '../block/block-device.js';
import { checkImageLock, lockImage } from '../block/opfs-lock.js';
import { OpfsFileStore, checkOpfsName, isTemporaryName } from '../block/opfs-store.js';
import { type NewImage, createInStore, openChain } from '../format/image-access.js';
import { type FormatName, FormatError, type ImageFormat } from '../format/image-format.js';
import { openImage } from '../format/open.js';
import { sameContent } from '../format/same-content.js';
import { formatSize } from '../util/size.js';
import { writeDemoImage, DEMO_IMAGE_BYTES } from './demo.js';

export interface ImageEntry {
  name: string;
  format: FormatName;
  virtualSize: number;
  fileSize: number;
  /** Bytes of guest data the image itself holds (its data extents, as `map` lists them); absent when too scattered to count quickly. */
  dataBytes?: number;
  backingFile?: string;
  /** Who holds the image now: `in use by the job "mirror0"`. */
  inUse?: string;
  /** Set when the image could not be inspected (corrupt, or changing too fast to read). */
  note?: string;
  /** A job of this tab that holds the image, and how. */
  job?: { id: string; kind: 'mirror' | 'import'; role: 'source' | 'target' };
  /** The target of an interrupted job (not running anywhere): incomplete until it is resumed. */
  interruptedJob?: string;
}

/** What the list knows of an image besides its file (a job's own view of its images). */
export type ImageFacts = Pick<ImageEntry, 'format' | 'virtualSize' | 'backingFile' | 'dataBytes'>;

/** The OPFS directory that holds the images. */
const IMAGE_DIRECTORY = 'images';
const SHA256_LIMIT = 512 << 20;
/** The list counts an image's data in at most this many extents (a few metadata reads); past that it says nothing. */
const DATA_EXTENTS_LIMIT = 4096;

/** Bytes of data the image itself holds (not its backing file's), or undefined past DATA_EXTENTS_LIMIT extents. */
async function dataBytes(image: ImageFormat, size: number): Promise<number | undefined> {
  let bytes = 0;
  let offset = 0;
  for (let n = 0; offset < size; n++) {
    if (n === DATA_EXTENTS_LIMIT) return undefined;
    const s = await image.blockStatus(offset, size - offset);
    if (s.bytes <= 0) break;
    if (s.kind === 'data' && s.depth === 0) bytes += s.bytes;
    offset += s.bytes;
  }
  return bytes;
}

/**
 * Publishes a new image; if that fails, the image is discarded. (A publish
 * that was tried leaves createInStore's discard doing nothing: the image is
 * closed here too, and its temporary file, whose lock that frees, goes with
 * the next clean-up of the list.)
 */
export async function publishOrDrop(made: NewImage): Promise<void> {
  try {
    await made.publish();
  } catch (err) {
    await made.discard().catch(() => {});
    await made.image.close().catch(() => {});
    throw err;
  }
}

export function checkImageName(name: string): string {
  return checkOpfsName(name);
}

/** A snapshot read met a write (somewhere down the error's causes). */
function changedWhileRead(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { name?: unknown }).name === 'NotReadableError') return true;
  }
  return false;
}

function base(name: string): string {
  return name.split(/[/\\]/).pop() || name;
}

export class ImageStore {
  private dir: FileSystemDirectoryHandle | undefined;
  /** The last description of each image, for when a snapshot cannot be read. */
  private readonly known = new Map<string, ImageFacts>();

  async directory(): Promise<FileSystemDirectoryHandle> {
    if (!this.dir) {
      const root = await navigator.storage.getDirectory();
      this.dir = await root.getDirectoryHandle(IMAGE_DIRECTORY, { create: true });
    }
    return this.dir;
  }

  /** A store whose locks say `holder` (a job, or words: `a deletion`). */
  files(holder: string | LockHolder): OpfsFileStore {
    return new OpfsFileStore(() => this.directory(), holder);
  }

  /**
   * The images, described from snapshots; `facts` gives what a job knows of
   * the images it holds (read from its open images, never from the file).
   */
  async list(facts: (name: string) => ImageFacts | undefined = () => undefined): Promise<ImageEntry[]> {
    const dir = await this.directory();
    const names: string[] = [];
    for await (const [name, handle] of dir as unknown as AsyncIterable<[string, FileSystemHandle]>) {
      if (handle.kind === 'file') names.push(name);
    }
    // A temporary file whose maker is gone (a tab closed mid-create) goes; the others are not images yet.
    await OpfsFileStore.removeStaleTemporaries(dir, names);
    const out: ImageEntry[] = [];
    for (const name of names) {
      if (isTemporaryName(name)) continue;
      const entry = await this.describe(name, facts(name));
      if (entry) out.push(entry);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** One image as the list shows it; null when it is gone. */
  async describe(name: string, facts?: ImageFacts): Promise<ImageEntry | null> {
    const dir = await this.directory();
    let file: File;
    try {
      file = await (await dir.getFileHandle(name)).getFile();
    } catch {
      return null;
    }
    const entry: ImageEntry = { name, format: 'raw', virtualSize: file.size, fileSize: file.size };
    if (facts) {
      Object.assign(entry, facts);
      this.known.set(name, facts);
      return entry;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const found = await this.readFacts(dir, name, file);
        Object.assign(entry, found);
        this.known.set(name, found);
        return entry;
      } catch (err) {
        // The file changed while its snapshot was read: take a new one.
        if (changedWhileRead(err) && attempt < 3) {
          file = await (await dir.getFileHandle(name)).getFile().catch(() => file);
          continue;
        }
        const known = this.known.get(name);
        if (known) Object.assign(entry, known);
        else entry.note = (err as Error).message;
        return entry;
      }
    }
  }

  private async readFacts(dir: FileSystemDirectoryHandle, name: string, file: File): Promise<ImageFacts> {
    const image = await openImage(new BlobDevice(file, name), {
      name,
      readOnly: true,
      // Backing files live in the same directory, named by the last part of what the header says.
      resolve: async (backing) => {
        const b = base(backing);
        return { device: new BlobDevice(await (await dir.getFileHandle(checkOpfsName(b))).getFile(), b), name: b };
      },
    });
    try {
      const info = await image.info();
      const facts: ImageFacts = { format: image.format, virtualSize: info.virtualSize };
      if (info.backingFile) facts.backingFile = info.backingFile;
      const data = await dataBytes(image, info.virtualSize);
      if (data !== undefined) facts.dataBytes = data;
      return facts;
    } finally {
      await image.close().catch(() => {});
    }
  }

  /** Creates a blank image (qcow2 with QEMU's defaults, or sparse raw); refuses to overwrite one. */
  async create(name: string, format: FormatName, virtualSize: number): Promise<void> {
    checkOpfsName(name);
    // A disk of no bytes holds nothing to mirror: refused, as a size that is not a whole number is.
    if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0) throw new FormatError(`Image size ${virtualSize} must be a whole number of bytes, more than 0`, 'size');
    // A raw image takes all of its size in the browser's storage at once (OPFS counts a file's length, holes or not).
    const advice = 'Make a qcow2 image instead (it grows only as data is written), a smaller one, or free space by deleting images';
    const cannotHold = (why: string) => new FormatError(`The browser's storage cannot hold a raw image of ${formatSize(virtualSize)}: ${why}. ${advice}`, 'size');
    if (format === 'raw') {
      const { usage = 0, quota = Infinity } = (await navigator.storage?.estimate?.().catch(() => null)) ?? {};
      if (virtualSize > quota - usage) throw cannotHold(`it has ${formatSize(Math.max(0, quota - usage))} left of ${formatSize(quota)}, and a raw image takes all of its size at once`);
    }
    let created: NewImage;
    try {
      created = await createInStore(this.files('an image being created'), name, { format, size: virtualSize }, { replace: false });
    } catch (err) {
      if (format === 'raw' && err instanceof BlockError && err.code === 'ENOSPC') throw cannotHold('the browser refused the space (a raw image takes all of its size at once)');
      throw err;
    }
    try {
      await created.image.flush();
    } catch (err) {
      await created.discard();
      throw err;
    }
    await publishOrDrop(created);
    await created.image.close();
    // What was made, read back: a browser may keep a shorter file than it was asked for (a private window's storage, in memory).
    // (A format may round the size up, as vpc does to a disk geometry: only less than asked is a failure.)
    const made = await this.describe(name);
    if (!made || made.virtualSize < virtualSize) {
      await this.remove(name).catch(() => {});
      throw new FormatError(
        `The browser kept "${name}" at ${formatSize(made?.virtualSize ?? 0)}, not ${formatSize(virtualSize)}: its storage cannot hold a file that large here (a private window keeps files in memory, with less room). ${advice}, or use a normal window`,
        'size',
      );
    }
  }

  /** Makes the demo image; one of that name is replaced once the new one is whole, unless something holds it. */
  async createDemo(name = 'demo.raw'): Promise<void> {
    checkOpfsName(name);
    const created = await createInStore(this.files('the demo image being made'), name, { format: 'raw', size: DEMO_IMAGE_BYTES }, { replace: true });
    try {
      await writeDemoImage(created.image);
    } catch (err) {
      await created.discard();
      throw err;
    }
    await publishOrDrop(created);
    await created.image.close();
  }

  /** Deletes an image; refused (LockError) while anybody holds it. */
  async remove(name: string): Promise<void> {
    checkOpfsName(name);
    const dir = await this.directory();
    await dir.getFileHandle(name).catch((err) => {
      throw new BlockError('ENOENT', 'open', 0, 0, `cannot delete "${name}": it does not exist`, { cause: err });
    });
    const lock = await lockImage(name, 'exclusive', 'a deletion');
    try {
      await dir.removeEntry(name);
    } catch (err) {
      const n = (err as Error).name;
      const code = n === 'NotFoundError' ? 'ENOENT' : n === 'NoModificationAllowedError' ? 'EBUSY' : 'EIO';
      throw new BlockError(code, 'open', 0, 0, `cannot delete "${name}": ${(err as Error).message}`, { cause: err });
    } finally {
      await lock.release();
    }
    this.known.delete(name);
  }

  /** Throws the LockError a deletion of `name` would meet now. Looks only: takes no lock. */
  async checkRemovable(name: string): Promise<void> {
    checkOpfsName(name);
    const conflict = await checkImageLock(name, 'exclusive');
    if (conflict) throw conflict;
  }

  /**
   * A snapshot of an image's file, taken under a shared lock (refused, with
   * the lock's message, while a job writes the image). Should the image
   * change after the lock is let go, reading the snapshot fails rather than
   * mix two versions.
   */
  async file(name: string, holder: string): Promise<File> {
    checkOpfsName(name);
    const lock = await lockImage(name, 'shared', holder);
    try {
      return await this.snapshot(name);
    } finally {
      await lock.release();
    }
  }

  /**
   * An image's bytes, read under a shared lock that is held until the
   * stream ends, fails or is cancelled: refused while a job writes the
   * image, and no job starts writing it while the stream is read.
   */
  async stream(name: string, holder: string): Promise<ReadableStream<Uint8Array>> {
    checkOpfsName(name);
    const lock = await lockImage(name, 'shared', holder);
    let reader: ReadableStreamDefaultReader<Uint8Array>;
    try {
      reader = (await this.snapshot(name)).stream().getReader();
    } catch (err) {
      await lock.release();
      throw err;
    }
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (!done) {
            controller.enqueue(value);
            return;
          }
          controller.close();
        } catch (err) {
          controller.error(err);
        }
        await lock.release();
      },
      async cancel(reason) {
        try {
          await reader.cancel(reason);
        } finally {
          await lock.release();
        }
      },
    });
  }

  /** SHA-256 of an image file's bytes, read under a shared lock (refused while a job writes it). */
  async sha256(name: string): Promise<string> {
    checkOpfsName(name);
    const lock = await lockImage(name, 'shared', 'a checksum being computed');
    try {
      const file = await this.snapshot(name);
      if (file.size > SHA256_LIMIT) {
        throw new BlockError('EFBIG', 'read', 0, file.size, `hashing reads the image into memory; "${name}" is over 512 MiB`);
      }
      const bytes = new Uint8Array(await file.arrayBuffer());
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
    } finally {
      await lock.release();
    }
  }

  /** Whether two images show a guest the same bytes (each read under a shared lock; refused while a job writes either). */
  async sameContent(a: string, b: string): Promise<boolean> {
    const files = this.files('a comparison');
    const first = await openChain(files, a, { readOnly: true });
    try {
      const second = await openChain(files, b, { readOnly: true });
      try {
        return await sameContent(first.image, second.image);
      } finally {
        await second.image.close();
      }
    } finally {
      await first.image.close();
    }
  }

  /** An image's file as it is now; the image being gone or unreadable is a BlockError. */
  private async snapshot(name: string): Promise<File> {
    const dir = await this.directory();
    try {
      return await (await dir.getFileHandle(name)).getFile();
    } catch (err) {
      const code = (err as Error).name === 'NotFoundError' ? 'ENOENT' : 'EIO';
      throw new BlockError(code, 'open', 0, 0, `cannot read "${name}" now (${(err as Error).message})`, { cause: err });
    }
  }
}
