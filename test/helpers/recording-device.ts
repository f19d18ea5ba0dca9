/**
 * A device over memory that records every change sent to it (writes,
 * flushes, resizes), in order, so that a test can rebuild the file as a
 * crash after any of them would leave it.
 */
import type { BlockDevice } from '../../src/block/block-device.js';
import { MemoryDevice } from '../../src/block/memory.js';

export type Event = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'flush' } | { kind: 'resize'; bytes: number };

/** A device that remembers every change, in order. */
export class RecordingDevice implements BlockDevice {
  readonly events: Event[] = [];
  constructor(private readonly inner: MemoryDevice) {}
  get size() {
    return this.inner.size;
  }
  get readOnly() {
    return false;
  }
  read(offset: number, into: Uint8Array) {
    return this.inner.read(offset, into);
  }
  async write(offset: number, data: Uint8Array) {
    this.events.push({ kind: 'write', offset, data: data.slice() });
    return this.inner.write(offset, data);
  }
  async flush() {
    this.events.push({ kind: 'flush' });
  }
  async resize(bytes: number) {
    this.events.push({ kind: 'resize', bytes });
    return this.inner.resize(bytes);
  }
  close() {
    return this.inner.close();
  }
}

