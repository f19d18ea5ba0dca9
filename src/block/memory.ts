import { type BlockDevice, checkDeviceRequest, closedError, readOnlyError } from './block-device.js';

/** A device in memory; it grows when written past its end. */
export class MemoryDevice implements BlockDevice {
  private buf: Uint8Array;
  private length: number;
  private closed = false;

  constructor(
    initial: Uint8Array | number = 0,
    readonly readOnly = false,
  ) {
    this.buf = typeof initial === 'number' ? new Uint8Array(initial) : initial.slice();
    this.length = this.buf.length;
  }

  get size(): number {
    return this.length;
  }

  /** The current contents (a copy). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkDeviceRequest('read', offset, into.length, this.length, true);
    into.set(this.buf.subarray(offset, offset + into.length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('write', offset, data.length);
    if (this.readOnly) throw readOnlyError('write', offset, data.length);
    checkDeviceRequest('write', offset, data.length, this.length, false);
    this.ensure(offset + data.length);
    this.buf.set(data, offset);
  }

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
  }

  async resize(bytes: number): Promise<void> {
    if (this.closed) throw closedError('resize', 0, bytes);
    if (this.readOnly) throw readOnlyError('resize', 0, bytes);
    checkDeviceRequest('resize', 0, bytes, 0, false);
    if (bytes < this.length) this.buf.fill(0, bytes, this.length);
    this.ensure(bytes);
    this.length = bytes;
  }

  async discard(offset: number, bytes: number): Promise<void> {
    if (this.closed) throw closedError('discard', offset, bytes);
    if (this.readOnly) throw readOnlyError('discard', offset, bytes);
    checkDeviceRequest('discard', offset, bytes, this.length, false);
    this.buf.fill(0, offset, Math.min(offset + bytes, this.length));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private ensure(end: number): void {
    if (end > this.buf.length) {
      const grown = new Uint8Array(Math.max(end, Math.min(this.buf.length * 2, end + (64 << 20))));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    if (end > this.length) this.length = end;
  }
}
