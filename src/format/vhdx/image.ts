/**
 * A VHDX image, dynamic or fixed, as an ImageFormat: the wiring of
 * header.ts, metadata.ts, bat.ts and log.ts. As qemu-img, payload blocks
 * in the file (FULLY_PRESENT) read as stored, blocks in any zero state
 * (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED) as zeroes; a PARTIALLY_PRESENT
 * block belongs to a differencing image and cannot be read.
 *
 * Writes keep the file valid at every point without the log (so a kill
 * leaves an image qemu-img opens, and nothing to replay): the first write
 * after opening updates the two headers one at a time, each flushed, as
 * qemu-img does (new file and data write GUIDs, the sequence number up by
 * one each, so the valid header with the highest number always describes
 * the image); a new block goes at the end of the file, rounded up to 1 MiB
 * (the file grows with zeroes), takes the guest's bytes, is flushed, and
 * only then gets its BAT entry (one aligned 8-byte write). A block that
 * never got its entry is space the next allocation skips.
 */
import { type BlockDevice, checkDeviceRequest } from '../../block/block-device.js';
import { type BlockStatus, type BlockStatusOptions, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { Serial, forEachPiece, mappedBlockStatus, readMapped, writeZeroBytes } from '../block-pieces.js';
import { type Bat, batIndex, batProblems, readBat } from './bat.js';
import {
  BAT_ENTRY_BYTES,
  HEADER_BYTES,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  LOGICAL_SECTOR_BYTES,
  METADATA_TABLE_BYTES,
  MiB,
  PAYLOAD_FULLY_PRESENT,
  REGION_TABLE1_OFFSET,
  REGION_TABLE_BYTES,
  payloadKind,
} from './constants.js';
import { type Region, type VhdxHeader, chooseHeader, hasFileSignature, logPresent, parseRegionTable, randomGuid, writeNextHeader } from './header.js';
import { replayLog } from './log.js';
import { type VhdxMetadata, parseMetadata } from './metadata.js';

export interface VhdxOpenOptions {
  readOnly?: boolean;
  /** Open for `check`: the BAT's blocks are not checked here (check reports them all). */
  forCheck?: boolean;
}

/** Reads `bytes` at `offset`, refused (naming `field`) unless it lies in the file. */
async function readIn(file: BlockDevice, offset: number, bytes: number, field: string): Promise<Uint8Array> {
  if (offset + bytes > file.size) throw new FormatError(`vhdx ${field} at ${offset} (${bytes} bytes) is past the end of the file (${file.size} bytes)`, field);
  const out = new Uint8Array(bytes);
  await file.read(offset, out);
  return out;
}

export class VhdxImage implements ImageFormat {
  readonly format = 'vhdx' as const;
  readonly size: number;
  readonly readOnly: boolean;
  /** The headers have been updated for this session's writes (qemu-img's first visible write). */
  private headersUpdated = false;

  private constructor(
    readonly file: BlockDevice,
    private header: VhdxHeader,
    readonly regions: { log: Region; bat: Region; metadata: Region },
    readonly metadata: VhdxMetadata,
    private readonly bat: Bat,
    readOnly: boolean,
    /** The log was replayed when the image was opened (check counts it as a corruption fixed). */
    readonly logReplayed: boolean,
  ) {
    // QEMU counts whole sectors.
    this.size = Math.floor(metadata.virtualDiskSize / LOGICAL_SECTOR_BYTES) * LOGICAL_SECTOR_BYTES;
    this.readOnly = readOnly;
  }

  static async open(file: BlockDevice, options: VhdxOpenOptions = {}): Promise<VhdxImage> {
    const readOnly = options.readOnly ?? file.readOnly;
    if (file.size < REGION_TABLE1_OFFSET + REGION_TABLE_BYTES) throw new FormatError(`vhdx image is ${file.size} bytes: too small for its header section`, 'size');
    if (!hasFileSignature(await readIn(file, 0, 8, 'signature'))) throw new FormatError('vhdx image has no "vhdxfile" signature', 'signature');
    let header = chooseHeader(await readIn(file, HEADER1_OFFSET, HEADER_BYTES, 'header'), await readIn(file, HEADER2_OFFSET, HEADER_BYTES, 'header'));
    let logReplayed = false;
    if (logPresent(header)) {
      const replayed = await replayLog(file, header, readOnly);
      if (replayed) {
        header = replayed;
        logReplayed = true;
      }
    }
    const log = { offset: header.logOffset, bytes: header.logLength };
    const { bat: batRegion, metadata: metadataRegion } = parseRegionTable(await readIn(file, REGION_TABLE1_OFFSET, REGION_TABLE_BYTES, 'region_table'), log, file.size);
    const table = await readIn(file, metadataRegion.offset, Math.min(METADATA_TABLE_BYTES, metadataRegion.bytes), 'metadata');
    const padded = new Uint8Array(METADATA_TABLE_BYTES);
    padded.set(table);
    const metadata = await parseMetadata(padded, metadataRegion, (offset, bytes) => readIn(file, metadataRegion.offset + offset, bytes, 'metadata'));
    const blocks = Math.ceil(metadata.virtualDiskSize / metadata.blockBytes);
    const bat = await readBat(file, batRegion, blocks, metadata.chunkRatio);
    const regions = { log, bat: batRegion, metadata: metadataRegion };
    const image = new VhdxImage(file, header, regions, metadata, bat, readOnly, logReplayed);
    if (!options.forCheck) {
      const problem = image.problems(true)[0];
      if (problem) throw new FormatError(problem, 'bat');
    }
    return image;
  }

  /** What qemu-img check finds in the BAT (all of it, or the first). */
  problems(stopAtFirst = false): string[] {
    // QEMU sees the file as whole 512-byte sectors.
    const fileSize = Math.ceil(this.file.size / LOGICAL_SECTOR_BYTES) * LOGICAL_SECTOR_BYTES;
    return batProblems(this.bat, this.metadata.blockBytes, this.size, fileSize, [this.regions.log, this.regions.bat, this.regions.metadata], stopAtFirst);
  }

  get blockBytes(): number {
    return this.metadata.blockBytes;
  }

  /** Where the guest byte at `offset` is in the file, or null for a block that reads as zeroes. */
  private hostOffset(offset: number): number | null {
    const block = Math.floor(offset / this.blockBytes);
    const state = this.bat.states[block]!;
    switch (payloadKind(state)) {
      case 'zero':
        return null;
      case 'data':
        return this.bat.offsetsMiB[block]! * MiB + (offset % this.blockBytes);
      case 'partial':
        throw new FormatError(`vhdx BAT entry ${batIndex(block, this.bat.chunkRatio)} is PARTIALLY_PRESENT: a differencing image's block, which qemu-img cannot read either`, 'bat');
      default:
        throw new FormatError(`vhdx BAT entry ${batIndex(block, this.bat.chunkRatio)} has state ${state}, which is no payload block state`, 'bat');
    }
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkDeviceRequest('read', offset, into.length, this.size, true);
    await readMapped(this.file, offset, into, this.blockBytes, (at) => this.hostOffset(at));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, data.length, this.size, true);
    await this.beforeFirstWrite();
    await forEachPiece(offset, data.length, this.blockBytes, async (at, done, piece) => {
      const host = this.hostOffset(at);
      if (host === null) await this.allocations.run(() => this.allocate(at, data.subarray(done, done + piece)));
      else await this.file.write(host, data.subarray(done, done + piece));
    });
  }

  /** Allocations (and the header update) one at a time: each takes the end of the file, and a block is allocated once. */
  private readonly allocations = new Serial();

  /** As qemu-img before the first write: both headers updated, one at a time, each flushed. */
  private beforeFirstWrite(): Promise<void> {
    if (this.headersUpdated) return Promise.resolve();
    return this.allocations.run(async () => {
      if (this.headersUpdated) return;
      const fileWriteGuid = randomGuid();
      const dataWriteGuid = randomGuid();
      for (let i = 0; i < 2; i++) await this.writeHeader({ fileWriteGuid, dataWriteGuid, logGuid: this.header.logGuid });
      this.headersUpdated = true;
    });
  }

  /** Writes the header that is not current, one past the current's sequence number, flushed: it becomes current. */
  async writeHeader(fields: { fileWriteGuid: Uint8Array; dataWriteGuid: Uint8Array; logGuid: Uint8Array }): Promise<void> {
    this.header = await writeNextHeader(this.file, this.header, fields);
  }

  /** Writes the block holding `offset` at the end of the file, with `data` at `offset` (see the file's comment for the order). */
  private async allocate(offset: number, data: Uint8Array): Promise<void> {
    const block = Math.floor(offset / this.blockBytes);
    // Allocated while this waited its turn: written in place.
    const known = this.hostOffset(offset);
    if (known !== null) return this.file.write(known, data);
    const start = Math.ceil(this.file.size / MiB) * MiB;
    const end = start + this.blockBytes;
    if (this.file.resize) await this.file.resize(end);
    else await writeZeroBytes(this.file, this.file.size, end - this.file.size);
    await this.file.write(start + (offset % this.blockBytes), data);
    await this.file.flush();
    const entry = new Uint8Array(BAT_ENTRY_BYTES);
    const view = new DataView(entry.buffer);
    const mib = start / MiB;
    view.setUint32(0, ((mib % 4096) * 2 ** 20 + PAYLOAD_FULLY_PRESENT) >>> 0, true);
    view.setUint32(4, Math.floor(mib / 4096), true);
    await this.file.write(this.regions.bat.offset + batIndex(block, this.bat.chunkRatio) * BAT_ENTRY_BYTES, entry);
    this.bat.states[block] = PAYLOAD_FULLY_PRESENT;
    this.bat.offsetsMiB[block] = mib;
  }

  async writeZeroes(offset: number, bytes: number, _options: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, bytes, this.size, true);
    await forEachPiece(offset, bytes, this.blockBytes, async (at, _done, piece) => {
      // A block in a zero state reads as zeroes already.
      const host = this.hostOffset(at);
      if (host === null) return;
      await this.beforeFirstWrite();
      await writeZeroBytes(this.file, host, piece);
    });
  }

  async blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    checkDeviceRequest('read', offset, 0, this.size, true);
    return mappedBlockStatus(offset, bytes, this.size, this.blockBytes, (at) => this.hostOffset(at), options);
  }

  flush(): Promise<void> {
    return this.file.flush();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  async info(): Promise<ImageInfo> {
    return {
      format: 'vhdx',
      virtualSize: this.size,
      fileSize: this.file.size,
      clusterSize: this.blockBytes,
      details: {
        subformat: this.metadata.leaveBlocksAllocated ? 'fixed' : 'dynamic',
        blockSize: this.blockBytes,
        logicalSectorSize: this.metadata.logicalSectorBytes,
        physicalSectorSize: this.metadata.physicalSectorBytes,
        page83: this.metadata.page83,
      },
    };
  }

  private checkWritable(): void {
    if (this.readOnly) throw new FormatError('vhdx image is open read-only');
  }
}
