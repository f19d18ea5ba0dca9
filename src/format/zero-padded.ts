/**
 * A source seen as `size` bytes, reading zeroes past its end: a raw file
 * whose size is not a multiple of 512 becomes a whole number of sectors, as
 * qemu-img rounds it. Read-only.
 */
import { type BlockStatus, type BlockStatusOptions, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from './image-format.js';

export class ZeroPadded implements ImageFormat {
  readonly readOnly = true;
  constructor(
    readonly inner: ImageFormat,
    readonly size: number,
  ) {}
  get format() {
    return this.inner.format;
  }
  async read(offset: number, into: Uint8Array): Promise<void> {
    const inside = Math.max(0, Math.min(into.length, this.inner.size - offset));
    if (inside > 0) await this.inner.read(offset, into.subarray(0, inside));
    into.fill(0, inside);
  }
  async blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    if (offset >= this.inner.size) return { offset, bytes: Math.min(bytes, this.size - offset), kind: 'zero', depth: 0 };
    return this.inner.blockStatus(offset, Math.min(bytes, this.inner.size - offset), options);
  }
  write(): Promise<void> {
    throw new FormatError('read-only');
  }
  writeZeroes(_o: number, _b: number, _opts: WriteZeroesOptions): Promise<void> {
    throw new FormatError('read-only');
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  info(): Promise<ImageInfo> {
    return this.inner.info();
  }
}
