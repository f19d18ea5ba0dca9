/**
 * A diskmirror device as v86's disk: the object v86 0.5.462 takes as `hda`
 * when it has `get`, `set` and `load` (src/browser/starter.js), and the rest
 * its IDE disk (src/ide.js) calls on it:
 *
 *   byteLength                       the disk's size
 *   load(), onload                   called once before boot; onload says it is ready
 *   get(start, len, cb)              a read: cb(bytes)
 *   set(start, data, cb)             a write: cb() once done
 *   get_and_cache(start, len, cb)    the starter reads sector 0 this way before boot
 *   get_from_cache(start, len)       the IDE reads sector 0 synchronously for the disk's geometry
 *   get_state(), set_state(state)    the disk's part of a saved machine state
 *
 * The interface changes between v86 releases: the package is pinned.
 *
 * Requests run one at a time in the order v86 makes them, so a read after a
 * write sees it and writes reach the device in the guest's order. `set`'s
 * data is copied at once (v86 reuses the buffer it passes).
 *
 * When the guest hears its write is done: v86 emulates a PIIX IDE
 * controller, and Debian's kernel drives the disk with multiword DMA
 * (libata says "max MWDMA2"). For a DMA write v86 raises the completion
 * interrupt in `set`'s callback, so the guest waits for the device: a slow
 * write slows the guest. For a PIO write (not what this guest uses) v86
 * raises it before calling `set`. FLUSH CACHE is answered at once and never
 * reaches the device (v86 calls nothing for it): the guest's fsync waits
 * for its writes to be done (each DMA write is, once the device has it)
 * but does not make the device flush.
 *
 * What the guest can see of a failure: nothing directly. v86's callbacks
 * carry no error. A failed request is reported to `onError` and its
 * callback is never called: the guest's driver times the command out and
 * retries or fails it, instead of reading bytes that are not the disk's or
 * taking a lost write for a done one.
 */
import type { BlockDevice } from '../block/block-device.js';

export const SECTOR_BYTES = 512;

export interface GuestDiskHooks {
  /** A request failed (it is not answered: see above). */
  onError?(err: unknown, op: 'read' | 'write', offset: number, bytes: number): void;
  /** A write reached the device. */
  onWrite?(offset: number, bytes: number): void;
}

export class GuestDisk {
  readonly byteLength: number;
  /** Set by v86 before it calls `load`. */
  onload: ((event: object) => void) | undefined;
  onprogress: ((event: object) => void) | undefined;
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  private firstSector: Uint8Array | undefined;

  constructor(
    readonly device: BlockDevice,
    private readonly hooks: GuestDiskHooks = {},
  ) {
    if (device.size % SECTOR_BYTES !== 0) throw new Error(`a guest disk is whole sectors: ${device.size} bytes is not a multiple of ${SECTOR_BYTES}`);
    this.byteLength = device.size;
  }

  load(): void {
    queueMicrotask(() => this.onload?.(Object.create(null)));
  }

  get(start: number, len: number, cb: (data: Uint8Array) => void): void {
    this.enqueue('read', start, len, async () => {
      const data = new Uint8Array(len);
      await this.device.read(start, data);
      if (start === 0 && len >= SECTOR_BYTES) this.firstSector = data.slice(0, SECTOR_BYTES);
      cb(data);
    });
  }

  set(start: number, data: Uint8Array, cb: () => void): void {
    const copy = data.slice();
    this.enqueue('write', start, copy.length, async () => {
      await this.device.write(start, copy);
      if (this.firstSector && start < SECTOR_BYTES) this.firstSector = undefined;
      this.hooks.onWrite?.(start, copy.length);
      cb();
    });
  }

  get_and_cache(start: number, len: number, cb: (data: Uint8Array) => void): void {
    this.get(start, len, cb);
  }

  get_from_cache(start: number, len: number): Uint8Array | undefined {
    return this.firstSector && start + len <= SECTOR_BYTES ? this.firstSector.subarray(start, start + len) : undefined;
  }

  /** The disk's bytes stay in the device: a saved state holds only its size. */
  get_state(): [number] {
    return [this.byteLength];
  }

  set_state(state: unknown): void {
    if (!Array.isArray(state) || state[0] !== this.byteLength) throw new Error('a saved guest state for another disk size');
  }

  /** Requests made and not yet done. */
  get inFlight(): number {
    return this.pending;
  }

  /** Resolves once every request made so far is done (or failed). */
  drained(): Promise<void> {
    return this.tail;
  }

  private enqueue(op: 'read' | 'write', offset: number, bytes: number, run: () => Promise<void>): void {
    this.pending++;
    const report = (err: unknown) => {
      try {
        if (this.hooks.onError) this.hooks.onError(err, op, offset, bytes);
        else console.error(`guest disk: ${op} of ${bytes} bytes at ${offset} failed:`, err);
      } catch (hookErr) {
        console.error('guest disk: onError threw:', hookErr);
      }
    };
    // The chain never rejects: a failed request must not stop the ones after it.
    this.tail = this.tail
      .then(run)
      .catch(report)
      .finally(() => {
        this.pending--;
      });
  }
}
