/**
 * Who may touch an image: the one place where the command line and the
 * worker open and create the images of a command or a job (QEMU's image
 * locking and its checks in blockdev-mirror and qemu-img are the model).
 *
 * - Every file of a chain is opened through a FileStore, so it is locked:
 *   shared to read, exclusive to write, backing files always shared.
 * - A target is refused, before a byte is written, when it is the source
 *   itself (the same file by identity, whatever name reached it) or any
 *   image of the source's backing chain.
 * - A new image is made under a temporary name, exclusively, and appears
 *   under its own name only by rename; until then it can be discarded
 *   without a trace.
 * - A source that a job may write (a guest, x-source-write) is opened
 *   read-only all the same and reopened read-write on its first write.
 */
import { type FileIdentity, type BlockDevice, ImageConflictError } from '../block/block-device.js';
import type { FileStore } from '../block/file-store.js';
import type { BlockStatus, BlockStatusOptions, FormatName, ImageFormat, ImageInfo, WriteZeroesOptions } from './image-format.js';
import { FormatError } from './image-format.js';
import { type BackingResolver, type CreateImageOptions, createImage, openImage } from './open.js';

/** One file of a backing chain as it was opened. */
export interface ChainFile {
  name: string;
  identity: FileIdentity;
}

export interface OpenedImage {
  image: ImageFormat;
  /** The image's name as the store resolved it. */
  name: string;
  /** The image's file first, then each backing file down the chain. */
  chain: ChainFile[];
}

export interface OpenChainOptions {
  format?: FormatName;
  readOnly: boolean;
  /** Read-only, without locks (qemu-img -U): to look at an image in use. */
  forceShare?: boolean;
  /** qcow2: store whole, aligned cluster writes compressed. */
  compress?: boolean;
  /** Wraps the image's own device (not its backing files') before the format is read from it (a cache mode). */
  wrap?: (device: BlockDevice) => BlockDevice;
  /** Opened to be checked (see OpenOptions). */
  forCheck?: boolean;
}

/** Opens backing files through the store (read-only, shared locks), recording each in `chain`. */
function chainResolver(store: FileStore, chain: ChainFile[], forceShare = false): BackingResolver {
  return async (backing, options) => {
    const name = store.backingName(backing, options.from ?? chain[0]!.name);
    const file = await store.open(name, { readOnly: true, forceShare });
    const seen = chain.find((c) => c.identity.key === file.identity.key);
    if (seen) {
      await file.device.close().catch(() => {});
      throw new FormatError(`Backing file loop: '${options.from}' names '${backing}', which is ${seen.name}, already in the chain`, 'backing_file');
    }
    chain.push({ name: file.name, identity: file.identity });
    return { device: file.device, name: file.name };
  };
}

/** Opens an image and its backing chain, every file locked. */
export async function openChain(store: FileStore, name: string, options: OpenChainOptions): Promise<OpenedImage> {
  const forceShare = options.readOnly && options.forceShare === true;
  const top = await store.open(name, { readOnly: options.readOnly, forceShare });
  const chain: ChainFile[] = [{ name: top.name, identity: top.identity }];
  try {
    const image = await openImage(options.wrap ? options.wrap(top.device) : top.device, {
      name: top.name,
      readOnly: options.readOnly,
      resolve: chainResolver(store, chain, forceShare),
      ...(options.format ? { format: options.format } : {}),
      ...(options.compress ? { compress: true } : {}),
      ...(options.forCheck ? { forCheck: true } : {}),
    });
    return { image, name: top.name, chain };
  } catch (err) {
    await top.device.close().catch(() => {});
    throw err;
  }
}

/**
 * Refuses a target that is the source or one of its backing files. `target`
 * is what the target's name names now (null: nothing yet, nothing to refuse).
 */
export function refuseOverlap(source: OpenedImage, sourceName: string, targetName: string, target: FileIdentity | null): void {
  if (!target) return;
  const depth = source.chain.findIndex((c) => c.identity.key === target.key);
  if (depth < 0) return;
  if (depth === 0) {
    const same = targetName === sourceName ? `${targetName} is both the source and the target (the same file)` : `${targetName} is the same file as the source ${sourceName}`;
    throw new ImageConflictError(targetName, `${same}: refusing to write to it; nothing was written`);
  }
  const which = depth === 1 ? `the backing file of the source ${sourceName}` : `a backing file of the source ${sourceName} (named by ${source.chain[depth - 1]!.name})`;
  throw new ImageConflictError(targetName, `${targetName} is ${which}: writing it would change what the source reads; refusing; nothing was written`);
}

/** A new image under its temporary name; `publish` gives it its name, `discard` removes it. */
export interface NewImage {
  image: ImageFormat;
  /** The final name, as the store resolved it. */
  name: string;
  /**
   * The temporary file's identity. Under Node a rename keeps the inode, so
   * it is the published file's too; a store whose keys are names (OPFS)
   * gives the published file a new key: identify it again after publish.
   */
  identity: FileIdentity;
  publish(): Promise<void>;
  discard(): Promise<void>;
}

export interface CreateInStoreOptions {
  /** Replace an existing file of that name (create, convert); without it, refuse one (mirror). */
  replace: boolean;
  /** Wraps the new file's device before the format is written on it (a cache mode). */
  wrap?: (device: BlockDevice) => BlockDevice;
  /** qcow2: store whole, aligned cluster writes compressed. */
  compress?: boolean;
}

/**
 * Creates an image that will be called `name`. An existing file of that name
 * is locked exclusive until the new one replaces it (so a file another
 * process uses is never replaced), and refused when it is the new image's
 * own backing file.
 */
export async function createInStore(store: FileStore, name: string, options: CreateImageOptions, how: CreateInStoreOptions): Promise<NewImage> {
  const finalName = store.resolve(name);
  const existing = await store.identify(name);
  if (existing && !how.replace) throw new ImageConflictError(name, `${name} already exists`, { code: 'EEXIST' });
  if (options.backingFile !== undefined) {
    const selfBacking = () => new ImageConflictError(name, `${name}: Trying to create an image with the same filename as the backing file; nothing was written`);
    const backingName = store.backingName(options.backingFile, finalName);
    if (backingName === finalName) throw selfBacking();
    if (existing) {
      // The file being replaced may not be anywhere in the new image's backing chain.
      const backing = await openChain(store, backingName, { readOnly: true, ...(options.backingFormat ? { format: options.backingFormat } : {}) }).catch(() => null);
      if (backing) {
        const hit = backing.chain.some((c) => c.identity.key === existing.key);
        await backing.image.close().catch(() => {});
        if (hit) throw selfBacking();
      }
    }
  }
  // Hold what is there, so nobody else is using it while its replacement is made.
  const held = existing ? await store.open(name, { readOnly: false }) : null;
  let temporary: Awaited<ReturnType<FileStore['createTemporary']>> | undefined;
  try {
    temporary = await store.createTemporary(name);
    const device = how.wrap ? how.wrap(temporary.device) : temporary.device;
    const chain: ChainFile[] = [{ name: finalName, identity: temporary.identity }];
    const image = await createImage(device, options, {
      name: finalName,
      resolve: chainResolver(store, chain),
      ...(how.compress ? { compress: true } : {}),
    });
    const tmp = temporary;
    let settled = false;
    return {
      image,
      name: finalName,
      identity: tmp.identity,
      async publish() {
        if (settled) return;
        // Settled only once published: if that fails (the name appeared meanwhile), discard still cleans up.
        await store.publish(tmp.name, name, { replace: how.replace });
        settled = true;
        await held?.device.close().catch(() => {});
      },
      async discard() {
        if (settled) return;
        settled = true;
        await image.close().catch(() => {});
        await store.remove(tmp.name).catch(() => {});
        await held?.device.close().catch(() => {});
      },
    };
  } catch (err) {
    if (temporary) {
      await temporary.device.close().catch(() => {});
      await store.remove(temporary.name).catch(() => {});
    }
    await held?.device.close().catch(() => {});
    throw err;
  }
}

/**
 * A source a job may write, opened read-only: the first write waits for the
 * reads under way, closes it and opens it again read-write (the same file,
 * else the write fails), as QEMU reopens a node for writing. If the reopen
 * fails (a lock: somebody else reads it), the image is opened read-only
 * again and the write fails with the reason.
 */
export class WritableOnDemand implements ImageFormat {
  private opened: OpenedImage;
  private writable: boolean;
  private upgrading: Promise<void> | null = null;
  private active = 0;
  private idle: (() => void) | null = null;

  constructor(
    opened: OpenedImage,
    private readonly reopen: (readOnly: boolean) => Promise<OpenedImage>,
  ) {
    this.opened = opened;
    this.writable = !opened.image.readOnly;
  }

  /** The image and its chain as open now. */
  get current(): OpenedImage {
    return this.opened;
  }

  get format(): FormatName {
    return this.opened.image.format;
  }

  get size(): number {
    return this.opened.image.size;
  }

  /** Writable, on demand. */
  get readOnly(): boolean {
    return false;
  }

  private async use<T>(fn: (image: ImageFormat) => Promise<T>): Promise<T> {
    while (this.upgrading) await this.upgrading;
    this.active++;
    try {
      return await fn(this.opened.image);
    } finally {
      if (--this.active === 0) this.idle?.();
    }
  }

  private async writeAccess(): Promise<void> {
    while (!this.writable) {
      this.upgrading ??= this.upgrade().finally(() => (this.upgrading = null));
      await this.upgrading;
    }
  }

  private async upgrade(): Promise<void> {
    if (this.active > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    this.idle = null;
    const before = this.opened;
    await before.image.close();
    let next: OpenedImage;
    try {
      next = await this.reopen(false);
    } catch (err) {
      this.opened = await this.reopen(true);
      throw err;
    }
    if (next.chain[0]!.identity.key !== before.chain[0]!.identity.key) {
      await next.image.close().catch(() => {});
      this.opened = await this.reopen(true);
      throw new ImageConflictError(before.name, `${before.name} was replaced by another file while the job ran; it is not written`);
    }
    this.opened = next;
    this.writable = true;
  }

  read(offset: number, into: Uint8Array): Promise<void> {
    return this.use((image) => image.read(offset, into));
  }

  blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    return this.use((image) => image.blockStatus(offset, bytes, options));
  }

  info(): Promise<ImageInfo> {
    return this.use((image) => image.info());
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.writeAccess();
    return this.use((image) => image.write(offset, data));
  }

  async writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    await this.writeAccess();
    return this.use((image) => image.writeZeroes(offset, bytes, options));
  }

  async discard(offset: number, bytes: number): Promise<void> {
    await this.writeAccess();
    return this.use(async (image) => image.discard?.(offset, bytes));
  }

  flush(): Promise<void> {
    return this.use((image) => (this.writable ? image.flush() : Promise.resolve()));
  }

  async close(): Promise<void> {
    while (this.upgrading) await this.upgrading.catch(() => {});
    await this.opened.image.close();
  }
}
