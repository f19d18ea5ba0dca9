/**
 * A VDI image, dynamic or static, as an ImageFormat.
 *
 * A new block is written whole (the guest's bytes, zeroes around them) at
 * the end of the data area, flushed, then counted in the header's
 * blocks_allocated, flushed, and only then entered in the block map: a
 * kill before the entry leaves the disk as it was (at most a block that
 * qemu-img check counts as a mismatch of blocks_allocated, which the next
 * allocation never reuses), never a block map entry pointing at a block
 * that another allocation takes again.
 */
import { type BlockDevice, checkDeviceRequest } from '../../block/block-device.js';
import { type BlockStatus, type BlockStatusOptions, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { Serial, forEachPiece, mappedBlockStatus, readMapped, writeZeroBytes } from '../block-pieces.js';
import { BMAP_DISCARDED, BMAP_ENTRY_BYTES, H_BLOCKS_ALLOCATED, HEADER_BYTES, TYPE_STATIC } from './constants.js';
import { type VdiHeader, parseHeader } from './header.js';

export interface VdiOpenOptions {
  readOnly?: boolean;
}

/** Whether a block map entry places its block in the file (not unallocated nor discarded). */
export function isAllocated(entry: number): boolean {
  return entry < BMAP_DISCARDED;
}

export class VdiImage implements ImageFormat {
  readonly format = 'vdi' as const;
  readonly size: number;
  readonly readOnly: boolean;
  /** The index the next new block takes in the data area. */
  private nextIndex: number;

  private constructor(
    readonly file: BlockDevice,
    readonly header: VdiHeader,
    private readonly bmap: Uint32Array,
    readOnly: boolean,
  ) {
    this.size = header.diskSize;
    this.readOnly = readOnly;
    let next = header.blocksAllocated;
    for (const entry of bmap) if (isAllocated(entry) && entry >= next) next = entry + 1;
    this.nextIndex = next;
  }

  static async open(file: BlockDevice, options: VdiOpenOptions = {}): Promise<VdiImage> {
    if (file.size < HEADER_BYTES) throw new FormatError(`vdi image is ${file.size} bytes: too small for a header`, 'size');
    const head = new Uint8Array(HEADER_BYTES);
    await file.read(0, head);
    const header = parseHeader(head, file.size);
    const raw = new Uint8Array(header.blocksInImage * BMAP_ENTRY_BYTES);
    await file.read(header.offsetBmap, raw);
    const view = new DataView(raw.buffer);
    const bmap = new Uint32Array(header.blocksInImage);
    const diskBlocks = Math.ceil(header.diskSize / header.blockBytes);
    for (let i = 0; i < bmap.length; i++) {
      const entry = view.getUint32(i * BMAP_ENTRY_BYTES, true);
      bmap[i] = entry;
      if (!isAllocated(entry) || i >= diskBlocks) continue;
      if (entry >= header.blocksInImage) throw new FormatError(`vdi block map entry ${i} is ${entry}: more than blocks_in_image, ${header.blocksInImage}`, 'bmap');
      const end = header.offsetData + (entry + 1) * header.blockBytes;
      if (end > file.size) throw new FormatError(`vdi block map entry ${i} is ${entry}: its block ends at ${end}, past the end of the file (${file.size} bytes): the image is truncated`, 'bmap');
    }
    return new VdiImage(file, header, bmap, options.readOnly ?? file.readOnly);
  }

  private hostOffset(offset: number): number | null {
    const blockBytes = this.header.blockBytes;
    const entry = this.bmap[Math.floor(offset / blockBytes)]!;
    if (!isAllocated(entry)) return null;
    return this.header.offsetData + entry * blockBytes + (offset % blockBytes);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkDeviceRequest('read', offset, into.length, this.size, true);
    await readMapped(this.file, offset, into, this.header.blockBytes, (at) => this.hostOffset(at));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, data.length, this.size, true);
    await forEachPiece(offset, data.length, this.header.blockBytes, async (at, done, piece) => {
      const host = this.hostOffset(at);
      if (host === null) await this.allocations.run(() => this.allocate(at, data.subarray(done, done + piece)));
      else await this.file.write(host, data.subarray(done, done + piece));
    });
  }

  /** Allocations one at a time: each takes the next index, and a block being allocated is allocated once. */
  private readonly allocations = new Serial();

  /** Writes the block holding `offset` whole, with `data` at `offset` (see the file's comment for the order). */
  private async allocate(offset: number, data: Uint8Array): Promise<void> {
    const blockBytes = this.header.blockBytes;
    const blockIndex = Math.floor(offset / blockBytes);
    // Allocated while this waited its turn: written in place.
    const host = this.hostOffset(offset);
    if (host !== null) return this.file.write(host, data);
    const index = this.nextIndex;
    if (index >= this.header.blocksInImage) throw new FormatError(`vdi image has no room for another block (blocks_in_image ${this.header.blocksInImage})`, 'blocks_allocated');
    const block = new Uint8Array(blockBytes);
    block.set(data, offset % blockBytes);
    const start = this.header.offsetData + index * blockBytes;
    await this.file.write(start, block);
    await this.file.flush();
    const count = new Uint8Array(4);
    new DataView(count.buffer).setUint32(0, index + 1, true);
    await this.file.write(H_BLOCKS_ALLOCATED, count);
    await this.file.flush();
    const entry = new Uint8Array(BMAP_ENTRY_BYTES);
    new DataView(entry.buffer).setUint32(0, index, true);
    await this.file.write(this.header.offsetBmap + blockIndex * BMAP_ENTRY_BYTES, entry);
    this.nextIndex = index + 1;
    this.header.blocksAllocated = index + 1;
    this.bmap[blockIndex] = index;
  }

  async writeZeroes(offset: number, bytes: number, _options: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, bytes, this.size, true);
    await forEachPiece(offset, bytes, this.header.blockBytes, async (at, _done, piece) => {
      const host = this.hostOffset(at);
      // Unallocated and discarded blocks read as zeroes already.
      if (host !== null) await writeZeroBytes(this.file, host, piece);
    });
  }

  async blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    checkDeviceRequest('read', offset, 0, this.size, true);
    return mappedBlockStatus(offset, bytes, this.size, this.header.blockBytes, (at) => this.hostOffset(at), options);
  }

  flush(): Promise<void> {
    return this.file.flush();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  async info(): Promise<ImageInfo> {
    return {
      format: 'vdi',
      virtualSize: this.size,
      fileSize: this.file.size,
      clusterSize: this.header.blockBytes,
      details: {
        subformat: this.header.imageType === TYPE_STATIC ? 'static' : 'dynamic',
        uuidImage: this.header.uuidImage,
        uuidLastSnap: this.header.uuidLastSnap,
        blocksAllocated: this.header.blocksAllocated,
      },
    };
  }

  /** The block map and the allocated count, for check.ts. */
  mapForCheck(): { bmap: Uint32Array; blocksInImage: number; blocksAllocated: number } {
    return { bmap: this.bmap, blocksInImage: this.header.blocksInImage, blocksAllocated: this.header.blocksAllocated };
  }

  private checkWritable(): void {
    if (this.readOnly) throw new FormatError('vdi image is open read-only');
  }
}
