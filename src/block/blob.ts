/** A read-only device over a Blob or a picked File: nothing is read until asked. */
import { type BlockDevice, BlockError, checkDeviceRequest, closedError, readOnlyError } from './block-device.js';

export class BlobDevice implements BlockDevice {
  readonly readOnly = true;
  private closed = false;

  constructor(private readonly blob: Blob, readonly name = (blob as { name?: string }).name ?? 'blob') {}

  get size(): number {
    return this.blob.size;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.closed) throw closedError('read', offset, into.length);
    checkDeviceRequest('read', offset, into.length, this.blob.size, true);
    if (into.length === 0) return;
    let bytes: ArrayBuffer;
    try {
      bytes = await this.blob.slice(offset, offset + into.length).arrayBuffer();
    } catch (err) {
      // NotReadableError / NotFoundError: the file changed or went away after it was picked.
      const name = (err as { name?: string }).name;
      const code = name === 'NotFoundError' ? 'ENOENT' : 'EIO';
      throw new BlockError(code, 'read', offset, into.length, `${this.name}: ${(err as Error).message}`, { cause: err });
    }
    if (bytes.byteLength !== into.length) {
      throw new BlockError('EIO', 'read', offset, into.length, `${this.name}: got ${bytes.byteLength} bytes`);
    }
    into.set(new Uint8Array(bytes));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    throw readOnlyError('write', offset, data.length);
  }

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
