/**
 * Fault injection above a format, so rules speak of guest offsets (the bytes
 * a person sees), whatever the format keeps underneath. Writes of zeroes and
 * discards count as writes.
 */
import type { DurabilityNotice } from '../block/block-device.js';
import { FaultRules } from '../block/fault.js';
import type { BlockStatus, BlockStatusOptions, ImageFormat, ImageInfo, WriteZeroesOptions } from './image-format.js';

export class FaultImage implements ImageFormat {
  /** Present when the inner format has it (a write, for the fault rules). */
  readonly deallocate?: (offset: number, bytes: number) => Promise<void>;
  /** Present when the inner format has it. */
  readonly watchDurability?: (listener: (notice: DurabilityNotice) => void) => () => void;

  constructor(
    readonly inner: ImageFormat,
    readonly faults: FaultRules = new FaultRules(),
  ) {
    if (inner.watchDurability) this.watchDurability = (listener) => inner.watchDurability!(listener);
    if (inner.deallocate) {
      this.deallocate = async (offset, bytes) => {
        this.faults.check('write', offset, bytes);
        return inner.deallocate!(offset, bytes);
      };
    }
  }

  get format() {
    return this.inner.format;
  }

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    this.faults.check('read', offset, into.length);
    return this.inner.read(offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.faults.check('write', offset, data.length);
    return this.inner.write(offset, data);
  }

  async writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    this.faults.check('write', offset, bytes);
    return this.inner.writeZeroes(offset, bytes, options);
  }

  async discard(offset: number, bytes: number): Promise<void> {
    this.faults.check('write', offset, bytes);
    await this.inner.discard?.(offset, bytes);
  }

  async flush(): Promise<void> {
    this.faults.check('flush', 0, 0);
    return this.inner.flush();
  }

  blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    return this.inner.blockStatus(offset, bytes, options);
  }

  info(): Promise<ImageInfo> {
    return this.inner.info();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
