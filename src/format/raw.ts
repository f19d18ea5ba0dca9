/**
 * raw: the guest bytes are the file's bytes. Where the file can tell its
 * holes (SEEK_HOLE under Node), a hole is a zero extent: it is neither read
 * by a copy nor written again with zeroes.
 */
import { type BlockDevice, type DurabilityNotice, BlockError, checkDeviceRequest } from '../block/block-device.js';
import { type BlockStatus, type ImageFormat, type ImageInfo, type WriteZeroesOptions, zeroBuffer } from './image-format.js';

export type RawPreallocation = 'off' | 'full';

/** Zeroes at the end of the file are made by truncating when at least this long (a hole on sparse files). */
const TRUNCATE_ZEROES_BYTES = 64 << 10;

export class RawImage implements ImageFormat {
  readonly format = 'raw' as const;
  /** The file's: bytes lost with a connection are repaired by writing them again. */
  readonly watchDurability?: (listener: (notice: DurabilityNotice) => void) => () => void;

  constructor(readonly file: BlockDevice) {
    if (file.watchDurability) this.watchDurability = (listener) => file.watchDurability!(listener);
  }

  /**
   * A new raw image of `bytes` on an empty device: sparse (a hole where the
   * device allows), or with `preallocation: 'full'` every byte written.
   */
  static async create(file: BlockDevice, bytes: number, options: { preallocation?: RawPreallocation } = {}): Promise<RawImage> {
    checkDeviceRequest('resize', 0, bytes, 0, false);
    if (!file.resize) {
      if (file.size !== bytes) throw new BlockError('ENOTSUP', 'resize', 0, bytes, 'the device cannot be resized');
    } else {
      if (file.size !== 0) await file.resize(0);
      await file.resize(bytes);
    }
    const image = new RawImage(file);
    if (options.preallocation === 'full') {
      for (let done = 0; done < bytes; ) {
        const piece = zeroBuffer(bytes - done);
        await file.write(done, piece);
        done += piece.length;
      }
      await file.flush();
    }
    return image;
  }

  get size(): number {
    return this.file.size;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }

  read(offset: number, into: Uint8Array): Promise<void> {
    return this.file.read(offset, into);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    // The virtual size is fixed: a raw image does not grow by writing.
    checkDeviceRequest('write', offset, data.length, this.file.size, true);
    return this.changing(() => this.file.write(offset, data));
  }

  flush(): Promise<void> {
    return this.file.flush();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  async resize(bytes: number): Promise<void> {
    if (!this.file.resize) throw new BlockError('ENOTSUP', 'resize', 0, bytes, 'the device cannot be resized');
    return this.changing(() => this.file.resize!(bytes));
  }

  async discard(offset: number, bytes: number): Promise<void> {
    checkDeviceRequest('discard', offset, bytes, this.file.size, true);
    await this.changing(async () => this.file.discard?.(offset, bytes));
  }

  async blockStatus(offset: number, bytes: number): Promise<BlockStatus> {
    checkDeviceRequest('read', offset, 0, this.file.size, true);
    const length = Math.max(0, Math.min(bytes, this.file.size - offset));
    if (length > 0 && this.file.allocation) {
      const extent = await this.extentAt(offset);
      return { offset, bytes: Math.min(length, extent.end - offset), kind: extent.allocated ? 'data' : 'zero', depth: 0, hostOffset: offset };
    }
    return { offset, bytes: length, kind: 'data', depth: 0, hostOffset: offset };
  }

  /**
   * The whole data or hole extent around `offset`, asked once (two lseeks)
   * and kept until this image changes the file, so a copy asking chunk by
   * chunk costs no system calls inside one extent.
   */
  private extent: { start: number; end: number; allocated: boolean } | null = null;

  /** Changes of the file under way, and a count of changes begun or ended: a kept extent must not span one. */
  private changes = 0;
  private generation = 0;

  private async extentAt(offset: number): Promise<{ start: number; end: number; allocated: boolean }> {
    const known = this.extent;
    if (known && offset >= known.start && offset < known.end) return known;
    const generation = this.generation;
    const a = await this.file.allocation!(offset, this.file.size - offset);
    const extent = { start: offset, end: offset + a.bytes, allocated: a.allocated };
    if (generation === this.generation && this.changes === 0) this.extent = extent;
    return extent;
  }

  /** Runs a change of the file: the kept extent goes before it starts and again once it has landed. */
  private async changing<T>(change: () => Promise<T>): Promise<T> {
    this.changes++;
    this.generation++;
    this.extent = null;
    try {
      return await change();
    } finally {
      this.changes--;
      this.generation++;
      this.extent = null;
    }
  }

  /** Whether all of the range is a hole already. */
  private async isHole(offset: number, bytes: number): Promise<boolean> {
    if (!this.file.allocation || bytes === 0) return false;
    const extent = await this.extentAt(offset);
    return !extent.allocated && extent.end >= offset + bytes;
  }

  /**
   * Zeroes: a range that runs to the end of the file becomes a hole by
   * truncating and growing again (zeroes on every platform, sparse where
   * the file system allows); elsewhere zeroes are written, since a discard
   * is not guaranteed to read back as zeroes.
   */
  async writeZeroes(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    checkDeviceRequest('write', offset, bytes, this.file.size, true);
    // A hole reads as zeroes: nothing to write (a resumed copy stays as sparse as a fresh one).
    if (await this.isHole(offset, bytes)) return;
    return this.changing(() => this.zeroRange(offset, bytes, options));
  }

  private async zeroRange(offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    if (this.file.writeZeroes) return this.file.writeZeroes(offset, bytes, { unmap: options.unmap === true });
    const size = this.file.size;
    if (options.unmap && this.file.resize && offset + bytes === size && bytes >= TRUNCATE_ZEROES_BYTES) {
      await this.file.resize(offset);
      await this.file.resize(size);
      return;
    }
    for (let done = 0; done < bytes; ) {
      const piece = zeroBuffer(bytes - done);
      await this.file.write(offset + done, piece);
      done += piece.length;
    }
  }

  async info(): Promise<ImageInfo> {
    return { format: 'raw', virtualSize: this.file.size, fileSize: this.file.size };
  }
}
