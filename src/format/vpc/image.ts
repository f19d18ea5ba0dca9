/**
 * A VHD image (QEMU's `vpc`), fixed or dynamic, as an ImageFormat: the
 * wiring of footer.ts and bat.ts. As in qemu-img, the sector bitmaps of a
 * dynamic image are not consulted: an allocated block reads as stored, an
 * unallocated one as zeroes.
 *
 * A new block is written so that a kill at any point leaves an image
 * qemu-img opens with the guest's data as it was: the footer goes first to
 * the new end of the file (the copy at offset 0 still describes the image
 * while the old footer is overwritten), then the block's bitmap and data,
 * flushed, and only then the BAT entry that makes the block part of the
 * disk. A block that never got its entry is space the next allocation
 * takes again.
 */
import { type BlockDevice, checkDeviceRequest } from '../../block/block-device.js';
import { type BlockStatus, type BlockStatusOptions, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { Serial, forEachPiece, readMapped, writeZeroBytes } from '../block-pieces.js';
import { BAT_ENTRY_BYTES, BAT_UNALLOCATED, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, FOOTER_BYTES, SECTOR_BYTES } from './constants.js';
import { type DynamicLayout, readDynamicLayout } from './bat.js';
import { type VpcFooter, hasFooterCookie, parseFooter } from './footer.js';

export interface VpcOpenOptions {
  readOnly?: boolean;
}

export class VpcImage implements ImageFormat {
  readonly format = 'vpc' as const;
  readonly size: number;
  readonly readOnly: boolean;

  private constructor(
    readonly file: BlockDevice,
    readonly footer: VpcFooter,
    private readonly layout: DynamicLayout | null,
    readOnly: boolean,
  ) {
    this.size = footer.virtualSize;
    this.readOnly = readOnly;
  }

  static async open(file: BlockDevice, options: VpcOpenOptions = {}): Promise<VpcImage> {
    if (file.size < FOOTER_BYTES) throw new FormatError(`vpc image is ${file.size} bytes: too small for a footer`, 'size');
    const head = new Uint8Array(FOOTER_BYTES);
    await file.read(0, head);
    let footer: VpcFooter | null = null;
    // A footer at the start belongs to a dynamic image; one that says fixed is a guest's bytes (a VHD inside a fixed VHD): the real footer is at the end.
    if (hasFooterCookie(head)) footer = parseFooter(head, 'start');
    if (!footer || footer.diskType === DISK_TYPE_FIXED) {
      const tail = new Uint8Array(FOOTER_BYTES);
      await file.read(file.size - FOOTER_BYTES, tail);
      footer = parseFooter(tail, 'end');
    }
    let layout: DynamicLayout | null = null;
    if (footer.diskType === DISK_TYPE_DYNAMIC) {
      layout = await readDynamicLayout(file, footer.dataOffset, footer.virtualSize);
    } else if (footer.virtualSize > file.size - FOOTER_BYTES) {
      throw new FormatError(`vpc fixed image of ${footer.virtualSize} bytes (field current_size or disk_geometry) does not fit in its file of ${file.size} bytes`, 'current_size');
    }
    return new VpcImage(file, footer, layout, options.readOnly ?? file.readOnly);
  }

  get dynamic(): boolean {
    return this.layout !== null;
  }

  /** Where the guest byte at `offset` is in the file, or null for an unallocated block. */
  private hostOffset(offset: number): number | null {
    const layout = this.layout;
    if (!layout) return offset;
    const index = Math.floor(offset / layout.blockBytes);
    const entry = layout.bat[index]!;
    if (entry === BAT_UNALLOCATED) return null;
    return entry * SECTOR_BYTES + layout.bitmapBytes + (offset % layout.blockBytes);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkDeviceRequest('read', offset, into.length, this.size, true);
    if (!this.layout) return this.file.read(offset, into);
    await readMapped(this.file, offset, into, this.layout.blockBytes, (at) => this.hostOffset(at));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, data.length, this.size, true);
    if (!this.layout) return this.file.write(offset, data);
    await forEachPiece(offset, data.length, this.layout.blockBytes, async (at, done, piece) => {
      const host = this.hostOffset(at) ?? (await this.allocations.run(() => this.allocate(at)));
      await this.file.write(host, data.subarray(done, done + piece));
    });
  }

  /** Allocations one at a time: each takes the end of the file, and a block is allocated once. */
  private readonly allocations = new Serial();

  /**
   * Gives the block holding `offset` its place at the end of the file (see
   * the file's comment for the order), and returns where `offset` now is.
   */
  private async allocate(offset: number): Promise<number> {
    const layout = this.layout!;
    const index = Math.floor(offset / layout.blockBytes);
    // Allocated while this waited its turn.
    const known = this.hostOffset(offset);
    if (known !== null) return known;
    const start = layout.freeOffset;
    const span = layout.bitmapBytes + layout.blockBytes;
    const fileEndBefore = this.file.size;
    await this.file.write(start + span, this.footer.bytes);
    // The bitmap (whole sectors) covers the old footer; past the old end the file grew as zeroes. In between
    // may lie a block written before a kill and never entered in the BAT: it must read as zeroes.
    if (fileEndBefore > start + layout.bitmapBytes) await writeZeroBytes(this.file, start + layout.bitmapBytes, Math.min(fileEndBefore, start + span) - (start + layout.bitmapBytes));
    await this.file.write(start, new Uint8Array(layout.bitmapBytes).fill(0xff));
    await this.file.flush();
    const entry = new Uint8Array(BAT_ENTRY_BYTES);
    new DataView(entry.buffer).setUint32(0, start / SECTOR_BYTES, false);
    await this.file.write(layout.batOffset + index * BAT_ENTRY_BYTES, entry);
    layout.bat[index] = start / SECTOR_BYTES;
    layout.freeOffset = start + span;
    return start + layout.bitmapBytes + (offset % layout.blockBytes);
  }

  async writeZeroes(offset: number, bytes: number, _options: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, bytes, this.size, true);
    if (!this.layout) return writeZeroBytes(this.file, offset, bytes);
    await forEachPiece(offset, bytes, this.layout.blockBytes, async (at, _done, piece) => {
      // An unallocated block reads as zeroes already.
      const host = this.hostOffset(at);
      if (host !== null) await writeZeroBytes(this.file, host, piece);
    });
  }

  async blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    checkDeviceRequest('read', offset, 0, this.size, true);
    const length = Math.max(0, Math.min(bytes, this.size - offset));
    if (!this.layout) {
      // A fixed image's holes are the file's (qemu-img looks into the file too): a copy never reads them.
      if (length > 0 && this.file.allocation) {
        const a = await this.file.allocation(offset, length);
        return { offset, bytes: Math.min(length, a.bytes), kind: a.allocated ? 'data' : 'zero', depth: 0, hostOffset: offset };
      }
      return { offset, bytes: length, kind: 'data', depth: 0, hostOffset: offset };
    }
    const blockBytes = this.layout.blockBytes;
    const host = this.hostOffset(offset);
    let run = Math.min(length, blockBytes - (offset % blockBytes));
    // An allocated run with contiguous set stops at its block: the next block's bitmap sits between.
    if (host === null || !options?.contiguous) {
      while (run < length && (this.hostOffset(offset + run) === null) === (host === null)) run += Math.min(length - run, blockBytes);
    }
    return host === null ? { offset, bytes: run, kind: 'zero', depth: 0 } : { offset, bytes: run, kind: 'data', depth: 0, hostOffset: host };
  }

  async flush(): Promise<void> {
    return this.file.flush();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  async info(): Promise<ImageInfo> {
    return {
      format: 'vpc',
      virtualSize: this.size,
      fileSize: this.file.size,
      ...(this.layout ? { clusterSize: this.layout.blockBytes } : {}),
      details: {
        subformat: this.footer.diskType === DISK_TYPE_FIXED ? 'fixed' : 'dynamic',
        creatorApp: this.footer.creatorApp,
        geometry: this.footer.geometry,
        currentSize: this.footer.currentSize,
      },
    };
  }

  private checkWritable(): void {
    if (this.readOnly) throw new FormatError('vpc image is open read-only');
  }
}
