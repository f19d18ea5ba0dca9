/**
 * The TypeScript face of the wasm kernel: loads the module (the same bytes in
 * a browser worker and under Node) and wraps its exports in typed classes.
 *
 * Views over linear memory die when memory grows, so nothing here caches a
 * view: `view()` builds one over the current buffer each time. A job sizes
 * its bitmap and buffer pool when it starts, so memory does not grow while
 * its I/O is in flight.
 */
import { expandBitmap } from './bitmap-serial.js';
import { KERNEL_WASM_BASE64 } from './kernel-wasm.gen.js';

interface KernelExports {
  memory: WebAssembly.Memory;
  MAX_CHUNKS: WebAssembly.Global;
  bitmapNew(nbChunks: number): number;
  bitmapFree(h: number): void;
  bitmapSize(h: number): number;
  bitmapCount(h: number): number;
  bitmapLevels(h: number): number;
  bitmapGet(h: number, chunk: number): number;
  bitmapSet(h: number, start: number, len: number): void;
  bitmapReset(h: number, start: number, len: number): void;
  bitmapNextDirty(h: number, from: number): number;
  bitmapNextClean(h: number, from: number): number;
  bitmapNextDirtyRun(h: number, from: number, maxLen: number): number;
  bitmapRunLength(): number;
  bitmapCountRange(h: number, start: number, len: number): number;
  bitmapWordsPtr(h: number): number;
  bitmapWords(h: number): number;
  bitmapRebuild(h: number): void;
  bitmapMerge(dst: number, src: number): number;
  bitmapClear(h: number): void;
  isZero(ptr: number, len: number): number;
  alloc(bytes: number): number;
  free(ptr: number): void;
  poolNew(slotBytes: number, nbSlots: number): number;
  poolTake(h: number): number;
  poolGive(h: number, ptr: number): number;
  poolFreeSlots(h: number): number;
  poolFree(h: number): void;
}

/** The most bytes one buffer pool holds (the kernel heap's largest block is 1 GiB, less its headers). */
export const MAX_POOL_BYTES = 2 ** 30 - 2 ** 20;

/** The largest bitmap the kernel makes: its bottom level is one heap block, at most 1 GiB less 1 MiB (2^33 - 2^23 chunks). */
export const MAX_BITMAP_CHUNKS = 2 ** 33 - 2 ** 23;

let compiled: Promise<WebAssembly.Module> | undefined;

function wasmBytes(): Uint8Array {
  const text = atob(KERNEL_WASM_BASE64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** Thrown when the kernel aborts (a bug or memory exhausted), never silently. */
export class KernelError extends Error {
  override name = 'KernelError';
}

export class Kernel {
  private constructor(readonly exports: KernelExports) {}

  /** A fresh kernel instance with its own linear memory. */
  static async create(): Promise<Kernel> {
    compiled ??= WebAssembly.compile(wasmBytes() as Uint8Array<ArrayBuffer>);
    const module = await compiled;
    let kernel: Kernel | undefined;
    const instance = await WebAssembly.instantiate(module, {
      env: {
        abort(messagePtr: number, filePtr: number, line: number, column: number) {
          const read = (ptr: number) => (kernel && ptr ? kernel.readString(ptr) : '?');
          throw new KernelError(`wasm kernel aborted: ${read(messagePtr)} at ${read(filePtr)}:${line}:${column}`);
        },
      },
    });
    kernel = new Kernel(instance.exports as unknown as KernelExports);
    return kernel;
  }

  get memory(): WebAssembly.Memory {
    return this.exports.memory;
  }

  /** A view of `bytes` bytes at `ptr`, over the current memory buffer. */
  view(ptr: number, bytes: number): Uint8Array {
    return new Uint8Array(this.exports.memory.buffer, ptr, bytes);
  }

  /** True when the bytes at `ptr` (in linear memory) are all zero. */
  isZero(ptr: number, bytes: number): boolean {
    return this.exports.isZero(ptr, bytes) !== 0;
  }

  /** Zero check for a view of this kernel's memory. */
  isZeroView(view: Uint8Array): boolean {
    if (view.buffer !== this.exports.memory.buffer) {
      throw new RangeError('isZeroView: the view is not over this kernel\'s memory');
    }
    return this.isZero(view.byteOffset, view.byteLength);
  }

  newBitmap(nbChunks: number): DirtyBitmap {
    if (!Number.isInteger(nbChunks) || nbChunks < 0 || nbChunks > MAX_BITMAP_CHUNKS) {
      throw new RangeError(`bitmap size ${nbChunks} chunks: must be an integer from 0 to ${MAX_BITMAP_CHUNKS}`);
    }
    // Addresses are unsigned: past 2 GiB of memory, wasm's i32 comes back negative.
    const handle = this.grow(`a bitmap of ${nbChunks} chunks`, () => this.exports.bitmapNew(nbChunks)) >>> 0;
    if (handle === 0) throw new KernelError(`bitmapNew(${nbChunks}) failed`);
    return new DirtyBitmap(this, handle, nbChunks);
  }

  /** A pool of `nbSlots` I/O buffers of `slotBytes` each, in linear memory. */
  newPool(slotBytes: number, nbSlots: number): BufferPool {
    if (!Number.isInteger(slotBytes) || slotBytes <= 0 || slotBytes > 2 ** 30) {
      throw new RangeError(`buffer pool slot size ${slotBytes}: must be 1 byte to 1 GiB`);
    }
    // One allocation of the kernel's heap holds at most 1 GiB.
    if (!Number.isInteger(nbSlots) || nbSlots <= 0 || slotBytes * nbSlots > MAX_POOL_BYTES) {
      throw new RangeError(`buffer pool of ${nbSlots} slots of ${slotBytes} bytes: must be 1 slot to ${MAX_POOL_BYTES} bytes`);
    }
    const handle = this.grow(`a buffer pool of ${nbSlots} buffers of ${slotBytes} bytes`, () => this.exports.poolNew(slotBytes, nbSlots)) >>> 0;
    if (handle === 0) throw new KernelError(`poolNew(${slotBytes}, ${nbSlots}) failed`);
    return new BufferPool(this, handle, slotBytes, nbSlots);
  }

  /**
   * Runs an allocation; memory that cannot grow any more (wasm's 4 GiB, or
   * the host's limit) traps inside the allocator, and comes out as a named
   * error. This kernel is then not used again (the allocator stopped midway).
   */
  private grow(what: string, alloc: () => number): number {
    if (this.broken) throw new KernelError(`the wasm kernel ran out of memory earlier and cannot allocate ${what}`);
    try {
      return alloc();
    } catch (err) {
      if (err instanceof WebAssembly.RuntimeError) {
        this.broken = true;
        throw new KernelError(`not enough memory for ${what} (the wasm kernel holds ${this.exports.memory.buffer.byteLength} bytes)`);
      }
      throw err;
    }
  }

  private broken = false;

  private readString(ptr: number): string {
    const u32 = new Uint32Array(this.exports.memory.buffer);
    const bytes = u32[(ptr - 4) >>> 2] ?? 0;
    const chars = new Uint16Array(this.exports.memory.buffer, ptr, Math.min(bytes >>> 1, 256));
    return String.fromCharCode(...chars);
  }
}

function checkChunk(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} ${value}: must be a non-negative integer`);
  }
}

/** A run of dirty chunks. */
export interface DirtyRun {
  start: number;
  length: number;
}

/** The serialized form starts with this magic, then the size, then level 0. */
const SERIAL_MAGIC = 0x4d42_4d44; // "DMBM" little-endian
const SERIAL_HEADER_BYTES = 16;

/** A hierarchical dirty bitmap in the kernel's memory. Positions are chunk indices. */
export class DirtyBitmap {
  private freed = false;

  constructor(
    private readonly kernel: Kernel,
    private readonly handle: number,
    /** Number of chunks. */
    readonly size: number,
  ) {}

  private get x(): KernelExports {
    if (this.freed) throw new KernelError('bitmap used after free');
    return this.kernel.exports;
  }

  /** Number of dirty chunks, O(1). */
  get count(): number {
    return this.x.bitmapCount(this.handle);
  }

  get levels(): number {
    return this.x.bitmapLevels(this.handle);
  }

  get(chunkIndex: number): boolean {
    checkChunk('chunk', chunkIndex);
    return this.x.bitmapGet(this.handle, chunkIndex) !== 0;
  }

  /** Marks [start, start + length) dirty; clamped to the bitmap. */
  set(start: number, length: number): void {
    checkChunk('start', start);
    checkChunk('length', length);
    this.x.bitmapSet(this.handle, start, length);
  }

  /** Marks [start, start + length) clean; clamped to the bitmap. */
  reset(start: number, length: number): void {
    checkChunk('start', start);
    checkChunk('length', length);
    this.x.bitmapReset(this.handle, start, length);
  }

  /** First dirty chunk at or after `from`, or -1. */
  nextDirty(from: number): number {
    checkChunk('from', from);
    return this.x.bitmapNextDirty(this.handle, from);
  }

  /** First clean chunk at or after `from`, or -1. */
  nextClean(from: number): number {
    checkChunk('from', from);
    return this.x.bitmapNextClean(this.handle, from);
  }

  /** The next dirty run at or after `from`, at most `maxLength` chunks, or null. */
  nextDirtyRun(from: number, maxLength: number): DirtyRun | null {
    checkChunk('from', from);
    checkChunk('maxLength', maxLength);
    const start = this.x.bitmapNextDirtyRun(this.handle, from, maxLength);
    if (start < 0) return null;
    return { start, length: this.x.bitmapRunLength() };
  }

  /** Dirty chunks in [start, start + length). */
  countRange(start: number, length: number): number {
    checkChunk('start', start);
    checkChunk('length', length);
    return this.x.bitmapCountRange(this.handle, start, length);
  }

  /** this |= other (same size). */
  merge(other: DirtyBitmap): void {
    if (other.kernel !== this.kernel) throw new RangeError('merge: bitmaps of different kernels');
    if (other.freed) throw new KernelError('merge: the other bitmap was freed');
    if (other.size !== this.size) {
      throw new RangeError(`merge: sizes differ (${this.size} and ${other.size} chunks)`);
    }
    this.x.bitmapMerge(this.handle, other.handle);
  }

  clear(): void {
    this.x.bitmapClear(this.handle);
  }

  /** A self-describing copy of the bitmap, for checkpoints. */
  serialize(): Uint8Array {
    const words = this.x.bitmapWords(this.handle);
    const out = new Uint8Array(SERIAL_HEADER_BYTES + words * 8);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, SERIAL_MAGIC, true);
    dv.setUint32(4, 1, true); // format version
    dv.setFloat64(8, this.size, true);
    out.set(this.kernel.view(this.x.bitmapWordsPtr(this.handle) >>> 0, words * 8), SERIAL_HEADER_BYTES);
    return out;
  }

  /** Replaces the contents with a serialized bitmap of the same size. */
  deserialize(serialized: Uint8Array): void {
    // The compact form (runs of dirty chunks) is expanded first.
    const data = expandBitmap(serialized);
    const words = this.x.bitmapWords(this.handle);
    if (data.byteLength !== SERIAL_HEADER_BYTES + words * 8) {
      throw new RangeError(`serialized bitmap: ${data.byteLength} bytes, expected ${SERIAL_HEADER_BYTES + words * 8}`);
    }
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (dv.getUint32(0, true) !== SERIAL_MAGIC || dv.getUint32(4, true) !== 1) {
      throw new RangeError('serialized bitmap: bad magic or version');
    }
    const size = dv.getFloat64(8, true);
    if (size !== this.size) {
      throw new RangeError(`serialized bitmap: ${size} chunks, this bitmap has ${this.size}`);
    }
    this.kernel.view(this.x.bitmapWordsPtr(this.handle) >>> 0, words * 8).set(data.subarray(SERIAL_HEADER_BYTES));
    this.x.bitmapRebuild(this.handle);
  }

  free(): void {
    if (this.freed) return;
    this.kernel.exports.bitmapFree(this.handle);
    this.freed = true;
  }
}

/** A buffer taken from a pool: its address in linear memory and its size. */
export interface PoolBuffer {
  ptr: number;
  bytes: number;
}

/** Fixed-size I/O buffers in linear memory. */
export class BufferPool {
  constructor(
    private readonly kernel: Kernel,
    private readonly handle: number,
    readonly slotBytes: number,
    readonly nbSlots: number,
  ) {}

  /** A free buffer, or null when all are in use. */
  take(): PoolBuffer | null {
    const ptr = this.kernel.exports.poolTake(this.handle) >>> 0;
    return ptr === 0 ? null : { ptr, bytes: this.slotBytes };
  }

  give(buffer: PoolBuffer): void {
    if (this.kernel.exports.poolGive(this.handle, buffer.ptr) === 0) {
      throw new KernelError(`buffer ${buffer.ptr} is not a taken buffer of this pool`);
    }
  }

  get freeSlots(): number {
    return this.kernel.exports.poolFreeSlots(this.handle);
  }

  /** A view of the first `bytes` bytes of a buffer (rebuilt over current memory). */
  view(buffer: PoolBuffer, bytes = buffer.bytes): Uint8Array {
    return this.kernel.view(buffer.ptr, bytes);
  }

  free(): void {
    this.kernel.exports.poolFree(this.handle);
  }
}
