/**
 * A device whose flushes do nothing: qemu-img's cache=unsafe, which convert
 * uses for its target by default (a copy cut short is useless anyway, and the
 * ordering flushes cost more than the copy).
 */
import type { BlockDevice } from './block-device.js';

/** A device whose flushes do nothing. */
export class UnsafeCacheDevice implements BlockDevice {
  constructor(private readonly inner: BlockDevice) {}
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
  resize(bytes: number): Promise<void> {
    return this.inner.resize!(bytes);
  }
}
