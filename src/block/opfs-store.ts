/**
 * The app's images as a FileStore: one flat directory in the Origin Private
 * File System, names as the person typed them, backing files looked up in
 * the same directory by the last part of the name an image gives.
 *
 * Every open takes the image's Web Lock (opfs-lock.ts) before its sync
 * access handle: shared and a read-only handle to read, exclusive and a
 * read-write handle to write, held until the device closes. An image's
 * identity is its directory entry: key `opfs:NAME`, its size and its
 * lastModified (getFile()), which Chromium updates on every write.
 *
 * A new image is made as NAME.dmpart-RANDOM under its own exclusive lock
 * (a name nobody else uses, checked absent first) and appears under NAME
 * by FileSystemFileHandle.move(), under NAME's exclusive lock. A file
 * cannot be moved while a sync access handle is open on it, so the handle
 * is closed for the move and opened again on the moved file; the image
 * above never notices, and nobody can step in meanwhile, as both names
 * stay locked. Where move() is missing, the bytes are copied into NAME
 * under its lock and the temporary file removed (not atomic: a crash then
 * leaves a partial NAME, never a damaged other file).
 */
import { type BlockDevice, type FileIdentity, type LockHolder, BlockError, checkDeviceRequest, closedError } from './block-device.js';
import type { FileStore, StoreFile } from './file-store.js';
import { type HeldLock, lockImage, tryWebLock, imageLockName } from './opfs-lock.js';
import { OpfsDevice, opfsError } from './opfs.js';

/** Marks a file that is being made (and hides it from the list of images). */
export const TEMPORARY_MARK = '.dmpart-';

/** Bytes copied at a time when a temporary file cannot be moved. */
const COPY_BYTES = 4 << 20;

/** An image name is one directory entry: not empty, no separators, not a temporary file's. */
export function checkOpfsName(name: string): string {
  const fail = (why: string) => new BlockError('EINVAL', 'open', 0, 0, why);
  if (typeof name !== 'string' || name.length === 0) throw fail('Image name is empty');
  if (name.length > 200) throw fail(`Image name "${name.slice(0, 20)}…" is longer than 200 characters`);
  if (/[/\\\0]/.test(name) || name === '.' || name === '..') throw fail(`Image name "${name}" may not contain / or \\ or be . or ..`);
  if (name.includes(TEMPORARY_MARK)) throw fail(`Image name "${name}" may not contain "${TEMPORARY_MARK}" (it marks files being made)`);
  return name;
}

export function isTemporaryName(name: string): boolean {
  return name.includes(TEMPORARY_MARK);
}

function checkAnyName(name: string): string {
  return isTemporaryName(name) ? name : checkOpfsName(name);
}

function isDomError(err: unknown, name: string): boolean {
  return (err as { name?: unknown } | null)?.name === name;
}

interface Movable {
  move?(dir: FileSystemDirectoryHandle, name: string): Promise<void>;
}

/** What an OPFS entry is now; null when there is none. */
export async function identifyEntry(dir: FileSystemDirectoryHandle, name: string): Promise<FileIdentity | null> {
  let file: File;
  try {
    file = await (await dir.getFileHandle(name)).getFile();
  } catch (err) {
    if (isDomError(err, 'NotFoundError')) return null;
    if (isDomError(err, 'TypeMismatchError')) throw new BlockError('EINVAL', 'open', 0, 0, `${name} is a directory, not an image file`, { cause: err });
    throw opfsError(err, 'open', 0, 0, name);
  }
  return { key: `opfs:${name}`, size: file.size, modifiedMs: file.lastModified };
}

/**
 * An OPFS file opened through the store: its sync access handle and its
 * lock. A publish closes the handle, moves the file and opens it again
 * under its new name; I/O waits meanwhile.
 */
export class StoreDevice implements BlockDevice {
  private closed = false;
  private inner: OpfsDevice | null;
  private gate: Promise<void> | null = null;
  private lastSize: number;

  constructor(
    inner: OpfsDevice,
    private handle: FileSystemFileHandle,
    public name: string,
    readonly readOnly: boolean,
    /** Released on close; a publish hands the final name's lock over. */
    public lock: HeldLock | null,
    private readonly onClose: (device: StoreDevice) => void,
  ) {
    this.inner = inner;
    this.lastSize = inner.size;
  }

  get size(): number {
    return this.inner?.size ?? this.lastSize;
  }

  private async device(op: 'read' | 'write' | 'flush' | 'resize', offset: number, bytes: number): Promise<OpfsDevice> {
    while (this.gate) await this.gate;
    if (this.closed || !this.inner) throw closedError(op, offset, bytes);
    return this.inner;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    return (await this.device('read', offset, into.length)).read(offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    return (await this.device('write', offset, data.length)).write(offset, data);
  }

  async flush(): Promise<void> {
    return (await this.device('flush', 0, 0)).flush();
  }

  async resize(bytes: number): Promise<void> {
    checkDeviceRequest('resize', 0, bytes, 0, false);
    return (await this.device('resize', 0, bytes)).resize(bytes);
  }

  async identity(): Promise<FileIdentity> {
    while (this.gate) await this.gate;
    let file: File;
    try {
      file = await this.handle.getFile();
    } catch (err) {
      throw opfsError(err, 'open', 0, 0, this.name);
    }
    return { key: `opfs:${this.name}`, size: file.size, modifiedMs: file.lastModified };
  }

  /**
   * Runs `fn` with I/O held back; inside it, `detach` closes the sync
   * access handle (flushing it) and keeps the lock, so the file can be
   * moved, and `attach` opens the file again under its new name.
   */
  async hold<T>(fn: (io: { detach(): Promise<void>; attach(handle: FileSystemFileHandle, name: string): Promise<void> }) => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    if (this.closed) throw closedError('open', 0, 0);
    let done!: () => void;
    this.gate = new Promise<void>((resolve) => (done = resolve));
    try {
      return await fn({
        detach: async () => {
          const inner = this.inner;
          if (!inner) return;
          this.lastSize = inner.size;
          this.inner = null;
          await inner.close();
        },
        attach: async (handle, name) => {
          this.inner = await OpfsDevice.openHandle(handle, name, { readOnly: this.readOnly });
          this.handle = handle;
          this.name = name;
        },
      });
    } finally {
      this.gate = null;
      done();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (this.gate) await this.gate;
    this.closed = true;
    try {
      await this.inner?.close();
    } finally {
      this.inner = null;
      const lock = this.lock;
      this.lock = null;
      this.onClose(this);
      await lock?.release();
    }
  }
}

export class OpfsFileStore implements FileStore {
  /** Devices this store opened and that are still open. */
  private readonly devices = new Set<StoreDevice>();

  constructor(
    private readonly directory: () => Promise<FileSystemDirectoryHandle>,
    /** Who opens images through this store, for lock messages: a job, or words (`an NBD export being looked at`). */
    readonly holder: string | LockHolder,
  ) {}

  resolve(name: string): string {
    return checkAnyName(name);
  }

  private async openLocked(name: string, readOnly: boolean, create: boolean, lock: HeldLock): Promise<StoreFile> {
    try {
      const dir = await this.directory();
      let handle: FileSystemFileHandle;
      try {
        handle = await dir.getFileHandle(name, { create });
      } catch (err) {
        if (isDomError(err, 'TypeMismatchError')) throw new BlockError('EINVAL', 'open', 0, 0, `${name} is a directory, not an image file`, { cause: err });
        throw opfsError(err, 'open', 0, 0, name);
      }
      const inner = await OpfsDevice.openHandle(handle, name, { readOnly });
      const device = new StoreDevice(inner, handle, name, readOnly, lock, (d) => this.devices.delete(d));
      this.devices.add(device);
      let identity: FileIdentity;
      try {
        identity = await device.identity();
      } catch (err) {
        await device.close().catch(() => {});
        throw err;
      }
      return { name, device, identity };
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  async open(name: string, options: { readOnly: boolean }): Promise<StoreFile> {
    checkOpfsName(name);
    const lock = await lockImage(name, options.readOnly ? 'shared' : 'exclusive', this.holder);
    return this.openLocked(name, options.readOnly, false, lock);
  }

  async identify(name: string): Promise<FileIdentity | null> {
    return identifyEntry(await this.directory(), checkAnyName(name));
  }

  backingName(name: string, _from: string): string {
    // Everything lives in one directory: a path names its file by the last part.
    return name.split(/[/\\]/).pop() || name;
  }

  async createTemporary(name: string): Promise<StoreFile> {
    checkOpfsName(name);
    const dir = await this.directory();
    for (let attempt = 0; ; attempt++) {
      const temporary = `${name}${TEMPORARY_MARK}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
      const lock = await lockImage(temporary, 'exclusive', this.holder).catch(() => null);
      // Never a file that is there already (left over, or somebody else's): pick another name.
      if (!lock || (await identifyEntry(dir, temporary).catch(() => true)) !== null) {
        await lock?.release();
        if (attempt < 5) continue;
        throw new BlockError('EEXIST', 'open', 0, 0, `could not find a free temporary name beside ${name}`);
      }
      return this.openLocked(temporary, false, true, lock);
    }
  }

  async publish(temporary: string, name: string, options: { replace: boolean }): Promise<void> {
    checkOpfsName(name);
    const dir = await this.directory();
    const device = [...this.devices].find((d) => d.name === temporary);
    // The file being replaced may be held by this store already (createInStore holds it while the new one is made).
    const holding = [...this.devices].find((d) => d.name === name && !d.readOnly && d.lock);
    let finalLock: HeldLock;
    if (holding) {
      if (!options.replace) throw new BlockError('EEXIST', 'open', 0, 0, `${name} already exists; it was left alone`);
      // Its handle closes (a file with an open handle cannot be replaced); its lock goes to the new file.
      await holding.hold((io) => io.detach());
      finalLock = holding.lock!;
      holding.lock = null;
    } else {
      finalLock = await lockImage(name, 'exclusive', this.holder);
      if (!options.replace && (await identifyEntry(dir, name).catch(() => true)) !== null) {
        await finalLock.release();
        throw new BlockError('EEXIST', 'open', 0, 0, `${name} appeared while it was being created; it was left alone`);
      }
    }
    const giveBack = async () => {
      if (holding) holding.lock = finalLock;
      else await finalLock.release();
    };
    const move = async (io: { detach(): Promise<void>; attach(handle: FileSystemFileHandle, name: string): Promise<void> } | null): Promise<void> => {
      const handle = await dir.getFileHandle(temporary);
      await io?.detach();
      try {
        if (typeof (handle as Movable).move === 'function') {
          await (handle as Movable).move!(dir, name);
        } else {
          await copyFile(dir, temporary, name);
          await dir.removeEntry(temporary);
        }
      } catch (err) {
        await io?.attach(handle, temporary).catch(() => {});
        throw err;
      }
      // The device is the file under its new name now, and holds that name's lock.
      await io?.attach(await dir.getFileHandle(name), name);
    };
    try {
      if (device) await device.hold(move);
      else await move(null);
    } catch (err) {
      await giveBack();
      throw opfsError(err, 'open', 0, 0, name);
    }
    if (device) {
      const temporaryLock = device.lock;
      device.lock = finalLock;
      await temporaryLock?.release();
    } else {
      await finalLock.release();
    }
  }

  async remove(name: string): Promise<void> {
    checkAnyName(name);
    const dir = await this.directory();
    const lock = await lockImage(name, 'exclusive', this.holder);
    try {
      await dir.removeEntry(name);
    } catch (err) {
      if (!isDomError(err, 'NotFoundError')) throw opfsError(err, 'open', 0, 0, name);
    } finally {
      await lock.release();
    }
  }

  /**
   * Removes temporary files nobody is making any more (their tab closed
   * mid-create): a temporary file whose lock can be taken is stale.
   */
  static async removeStaleTemporaries(dir: FileSystemDirectoryHandle, names: string[]): Promise<void> {
    for (const name of names) {
      if (!isTemporaryName(name)) continue;
      const lock = await tryWebLock(imageLockName(name), 'exclusive').catch(() => null);
      if (!lock) continue;
      try {
        await dir.removeEntry(name);
      } catch {
        // Open elsewhere after all: left alone.
      } finally {
        await lock.release();
      }
    }
  }
}

/** Copies file `from` into a new file `to` (both in `dir`) through sync access handles. */
async function copyFile(dir: FileSystemDirectoryHandle, from: string, to: string): Promise<void> {
  const source = await OpfsDevice.open(dir, from, { readOnly: true });
  try {
    const target = await OpfsDevice.open(dir, to, { create: true });
    try {
      await target.resize(0);
      const buffer = new Uint8Array(Math.min(COPY_BYTES, Math.max(1, source.size)));
      for (let offset = 0; offset < source.size; offset += buffer.length) {
        const piece = buffer.subarray(0, Math.min(buffer.length, source.size - offset));
        await source.read(offset, piece);
        await target.write(offset, piece);
      }
      await target.flush();
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}
