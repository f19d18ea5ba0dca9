/**
 * A device whose flushes do nothing: qemu-img's cache=unsafe, which convert
 * uses for its target by default (a copy cut short is useless anyway, and the
 * ordering flushes cost more than the copy). Everything else is the inner
 * device's, its optional abilities included (an NBD export keeps its
 * WRITE_ZEROES and block status).
 */
import type { BlockDevice, DurabilityNotice, FileIdentity } from './block-device.js';

/** A device whose flushes do nothing. */
export class UnsafeCacheDevice implements BlockDevice {
  readonly resize?: (bytes: number) => Promise<void>;
  readonly discard?: (offset: number, bytes: number) => Promise<void>;
  readonly writeZeroes?: (offset: number, bytes: number, options: { unmap: boolean }) => Promise<void>;
  readonly identity?: () => Promise<FileIdentity>;
  readonly allocation?: (offset: number, bytes: number) => Promise<{ allocated: boolean; bytes: number }>;
  /** The inner device's: it never flushes here, so whatever it acknowledged stays at risk until closed. */
  readonly watchDurability?: (listener: (notice: DurabilityNotice) => void) => () => void;

  constructor(private readonly inner: BlockDevice) {
    if (inner.resize) this.resize = (bytes) => inner.resize!(bytes);
    if (inner.discard) this.discard = (offset, bytes) => inner.discard!(offset, bytes);
    if (inner.writeZeroes) this.writeZeroes = (offset, bytes, options) => inner.writeZeroes!(offset, bytes, options);
    if (inner.identity) this.identity = () => inner.identity!();
    if (inner.allocation) this.allocation = (offset, bytes) => inner.allocation!(offset, bytes);
    if (inner.watchDurability) this.watchDurability = (listener) => inner.watchDurability!(listener);
  }
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(offset: number, into: Uint8Array): Promise<void> {
    return this.inner.read(offset, into);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.inner.write(offset, data);
  }
  async flush(): Promise<void> {}
  close(): Promise<void> {
    return this.inner.close();
  }
}
