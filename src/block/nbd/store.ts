/**
 * NBD exports beside the files of another store: a name that is an NBD URI
 * opens an export (it exists on its server: it is never created, replaced
 * or removed here), any other name goes to the files. The command line's
 * store is this over a Node directory tree.
 */
import { type FileIdentity, BlockError } from '../block-device.js';
import type { FileStore, StoreFile } from '../file-store.js';
import { NbdDevice } from './device.js';
import type { Connect } from './transport.js';
import { type NbdUri, isNbdUri, nbdKey, parseNbdUri } from './uri.js';

/** How long a connection made by identify waits for its open. */
const PARK_MS = 2000;

export class NbdAwareStore implements FileStore {
  constructor(
    private readonly files: FileStore,
    private readonly connector: (uri: NbdUri) => Connect,
    /** Resolves a Unix socket's path (for the identity key). */
    private readonly resolvePath: (path: string) => string = (p) => p,
  ) {}

  resolve(name: string): string {
    return isNbdUri(name) ? parseNbdUri(name).uri : this.files.resolve(name);
  }

  /** Opens an export as a device (read-only or not); the URI is checked first. */
  async openExport(name: string, readOnly: boolean, onClosed?: () => void): Promise<NbdDevice> {
    const uri = parseNbdUri(name);
    return NbdDevice.open({ connect: this.connector(uri), exportName: uri.exportName, name, key: this.keyOf(name), readOnly, ...(onClosed ? { onClosed } : {}) });
  }

  /** The export a URI names, however it is spelt (maps below are keyed by it). */
  private keyOf(name: string): string {
    return nbdKey(parseNbdUri(name), this.resolvePath);
  }

  /** Exports open through this store now, by name: identify asks them instead of connecting again. */
  private readonly live = new Map<string, Set<NbdDevice>>();

  private opened(key: string, device: NbdDevice): () => void {
    return () => {
      const set = this.live.get(key);
      set?.delete(device);
      if (set?.size === 0) this.live.delete(key);
    };
  }

  private track(key: string, device: NbdDevice): void {
    const set = this.live.get(key) ?? new Set();
    set.add(device);
    this.live.set(key, set);
  }

  /**
   * Connections made to identify an export, kept for the open that follows
   * (a server may take one client at a time, or serve only one: qemu-nbd
   * without -e and -t); closed if nobody takes them soon.
   */
  private readonly parked = new Map<string, { device: NbdDevice; timer: ReturnType<typeof setTimeout> }>();

  async open(name: string, options: { readOnly: boolean; forceShare?: boolean }): Promise<StoreFile> {
    if (!isNbdUri(name)) return this.files.open(name, options);
    const key = this.keyOf(name);
    const parked = this.parked.get(key);
    let device: NbdDevice;
    if (parked) {
      this.parked.delete(key);
      clearTimeout(parked.timer);
      try {
        device = parked.device.claim(options.readOnly, this.opened(key, parked.device));
      } catch (err) {
        await parked.device.close();
        throw err;
      }
    } else {
      let made: NbdDevice | null = null;
      device = made = await this.openExport(name, options.readOnly, () => made && this.opened(key, made)());
    }
    this.track(key, device);
    return { name, device, identity: await device.identity() };
  }

  async identify(name: string): Promise<FileIdentity | null> {
    if (!isNbdUri(name)) return this.files.identify(name);
    const key = this.keyOf(name);
    // An export is always there (or its server cannot be reached: that is the error).
    const known = this.parked.get(key)?.device ?? this.live.get(key)?.values().next().value;
    if (known) return known.identity();
    const device = await this.openExport(name, true);
    const timer = setTimeout(() => {
      if (this.parked.get(key)?.device !== device) return;
      this.parked.delete(key);
      void device.close();
    }, PARK_MS);
    this.parked.set(key, { device, timer });
    return device.identity();
  }

  backingName(name: string, from: string): string {
    if (!isNbdUri(from)) return this.files.backingName(name, from);
    if (isNbdUri(name) || name.startsWith('/')) return name;
    throw new BlockError('EINVAL', 'open', 0, 0, `${from} names the backing file '${name}', a relative name that means nothing on an NBD export`);
  }

  async createTemporary(name: string): Promise<StoreFile> {
    if (isNbdUri(name)) throw notCreated(name);
    return this.files.createTemporary(name);
  }

  async publish(temporary: string, name: string, options: { replace: boolean }): Promise<void> {
    if (isNbdUri(name)) throw notCreated(name);
    return this.files.publish(temporary, name, options);
  }

  async remove(name: string): Promise<void> {
    if (isNbdUri(name)) throw notCreated(name);
    return this.files.remove(name);
  }
}

function notCreated(name: string): BlockError {
  return new BlockError('ENOTSUP', 'open', 0, 0, `${name}: an NBD export is made by its server; it is never created, replaced or removed here`);
}
