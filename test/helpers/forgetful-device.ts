/**
 * A device in memory that forgets, as an NBD server that restarts does:
 * what it acknowledged is kept only in memory until a flush; `restart()`
 * drops everything written since the last flush and tells the device's
 * listeners of the loss (see BlockDevice.watchDurability). It can restart
 * by itself right after its n-th write.
 */
import { type BlockDevice, type DurabilityNotice, BlockError } from '../../src/block/block-device.js';
import { DurabilityWatch } from '../../src/block/durability.js';
import { MemoryDevice } from '../../src/block/memory.js';

export class ForgetfulDevice implements BlockDevice {
  readonly readOnly = false;
  private current: MemoryDevice;
  private durable: Uint8Array;
  private readonly durability = new DurabilityWatch();
  /** Writes acknowledged so far. */
  writes = 0;
  /** Restarts right after this write (counted from 1). */
  restartAfterWrite = Infinity;
  /** Restarts so far. */
  restarts = 0;

  constructor(size: number) {
    this.current = new MemoryDevice(size);
    this.durable = new Uint8Array(size);
  }

  get size(): number {
    return this.current.size;
  }

  resize(bytes: number): Promise<void> {
    return this.current.resize(bytes);
  }

  bytes(): Uint8Array {
    return this.current.bytes();
  }

  read(offset: number, into: Uint8Array): Promise<void> {
    return this.current.read(offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.current.write(offset, data);
    this.durability.acknowledgedWrite();
    if (++this.writes === this.restartAfterWrite) queueMicrotask(() => this.restart());
  }

  flush(): Promise<void> {
    return this.durability.flush(async () => {
      this.durable = this.current.bytes();
    });
  }

  /** Loses what was not flushed, and says so. */
  restart(): void {
    this.restarts++;
    this.current = new MemoryDevice(this.durable);
    this.durability.lost(new BlockError('EIO', 'write', 0, 0, 'the server restarted'));
  }

  watchDurability(listener: (notice: DurabilityNotice) => void): () => void {
    return this.durability.watch(listener);
  }

  close(): Promise<void> {
    return this.current.close();
  }
}
