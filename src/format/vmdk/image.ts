/**
 * A VMDK image as an ImageFormat: one sparse extent in the image's own
 * file (monolithicSparse, streamOptimized), or a descriptor file naming
 * extent files beside it (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs),
 * opened through the same resolver as a qcow2 backing file, read-only.
 *
 * Writes, as QEMU's: a sparse extent allocates a grain at the end of its
 * file (see sparse.ts for the order); a streamOptimized one takes whole
 * grains written once (a rewrite fails with EIO, a piece of a grain with
 * EINVAL, as in QEMU: "Could not write to allocated cluster for
 * streamOptimized"). The CID is not renewed on the first write.
 */
import { type BlockDevice, BlockError, checkDeviceRequest } from '../../block/block-device.js';
import { type BlockStatus, type BlockStatusKind, type BlockStatusOptions, type ImageFormat, type ImageInfo, type WriteZeroesOptions, FormatError } from '../image-format.js';
import { Serial, forEachPiece, writeZeroBytes } from '../block-pieces.js';
import { EMBEDDED_DESC_BYTES, EMBEDDED_DESC_OFFSET, MAX_DESC_FILE_BYTES, SECTOR_BYTES } from './constants.js';
import { descriptorFileType, descriptorText, parseExtentLines, readCids } from './descriptor.js';
import { hasCowdMagic, hasSparseMagic } from './header.js';
import { type Grain, SparseExtent } from './sparse.js';
import { SliceDevice, isOvaHead, ovaDisk } from './ova.js';

/** Opens a file named beside the image (open.ts's BackingResolver: the same shape, without the import). */
export type ExtentResolver = (name: string, options: { readOnly: boolean; from?: string }) => Promise<BlockDevice | { device: BlockDevice; name: string }>;

export interface VmdkOpenOptions {
  readOnly?: boolean;
  /** Opens extent files named by a descriptor (as backing files are opened). */
  resolve?: ExtentResolver;
  /** The image's name, for messages and for the resolver. */
  name?: string;
}

interface ExtentBase {
  /** Guest offset where the extent starts. */
  start: number;
  bytes: number;
  file: BlockDevice;
  /** The name as the descriptor spells it; null for the image's own file. */
  fileName: string | null;
  /** The descriptor's type word ('' for the sparse extent of a monolithic file, as qemu-img says). */
  type: string;
}
export type Extent = (ExtentBase & { flat: true; flatOffset: number }) | (ExtentBase & { flat: false; sparse: SparseExtent });

/** One extent's facts as qemu-img info lists them. */
export interface ExtentInfo {
  fileName: string | null;
  type: string;
  virtualSize: number;
  compressed: boolean;
  clusterSize?: number;
}

export class VmdkImage implements ImageFormat {
  readonly format = 'vmdk' as const;
  readonly size: number;
  readonly readOnly: boolean;
  private readonly allocations = new Serial();

  private constructor(
    readonly file: BlockDevice,
    readonly extents: Extent[],
    readonly createType: string,
    readonly cid: number,
    readonly parentCid: number,
    readOnly: boolean,
  ) {
    this.size = extents.reduce((sum, e) => sum + e.bytes, 0);
    this.readOnly = readOnly;
  }

  static async open(file: BlockDevice, options: VmdkOpenOptions = {}): Promise<VmdkImage> {
    const name = options.name ?? 'image';
    const readOnly = options.readOnly ?? file.readOnly;
    if (file.size < 4) throw new FormatError(`vmdk image ${name} is ${file.size} bytes: File is too small, not a valid image`, 'size');
    const head = new Uint8Array(Math.min(512, file.size));
    await file.read(0, head);
    if (isOvaHead(head)) {
      const disk = await ovaDisk(file, name);
      return VmdkImage.open(new SliceDevice(file, disk.offset, disk.bytes), { readOnly: true, name: `${name}/${disk.name}` });
    }
    if (hasCowdMagic(head)) throw new FormatError('vmdk image is a VMware ESX sparse file ("COWD"): not supported', 'magic');
    if (hasSparseMagic(head)) {
      const sparse = await SparseExtent.open(file, !readOnly, name);
      const desc = new Uint8Array(Math.max(0, Math.min(EMBEDDED_DESC_BYTES, file.size - EMBEDDED_DESC_OFFSET)));
      await file.read(EMBEDDED_DESC_OFFSET, desc);
      const { cid, parentCid } = readCids(descriptorText(desc), name);
      const extent: Extent = { start: 0, bytes: sparse.bytes, file, fileName: null, type: '', flat: false, sparse };
      return new VmdkImage(file, [extent], sparse.compressed ? 'streamOptimized' : 'monolithicSparse', cid, parentCid, readOnly);
    }
    const bytes = new Uint8Array(Math.min(file.size, MAX_DESC_FILE_BYTES));
    await file.read(0, bytes);
    const text = descriptorText(bytes);
    const createType = descriptorFileType(text);
    const extents = await openExtents(text, name, options.resolve);
    try {
      if (extents.length === 0) throw new FormatError(`vmdk descriptor ${name} names no extent`, 'extent');
      const { cid, parentCid } = readCids(text, name);
      return new VmdkImage(file, extents, createType, cid, parentCid, true);
    } catch (err) {
      await closeExtents(extents);
      throw err;
    }
  }

  private extentAt(offset: number): Extent {
    for (const e of this.extents) if (offset < e.start + e.bytes) return e;
    throw new FormatError(`vmdk offset ${offset} is past the last extent`, 'extent');
  }

  /** The extent holding `offset` and where the guest's byte is: a grain's status (sparse) or the flat file's offset. */
  private async locate(offset: number): Promise<{ extent: Extent; rel: number; piece: number; grain: Grain; grainStart: number }> {
    const extent = this.extentAt(offset);
    const rel = offset - extent.start;
    if (extent.flat) return { extent, rel, piece: extent.bytes - rel, grain: { kind: 'data', host: extent.flatOffset }, grainStart: 0 };
    const grainBytes = extent.sparse.grainBytes;
    const grainStart = rel - (rel % grainBytes);
    return { extent, rel, piece: Math.min(grainBytes, extent.bytes - grainStart) - (rel - grainStart), grain: await extent.sparse.lookup(rel), grainStart };
  }

  /** Calls `each` for pieces of the request that stay inside one grain (or one flat extent). */
  private async pieces(offset: number, bytes: number, each: (at: number, done: number, piece: number, where: Awaited<ReturnType<VmdkImage['locate']>>) => Promise<void>): Promise<void> {
    for (let done = 0; done < bytes; ) {
      const where = await this.locate(offset + done);
      const piece = Math.min(bytes - done, where.piece);
      await each(offset + done, done, piece, where);
      done += piece;
    }
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkDeviceRequest('read', offset, into.length, this.size, true);
    await this.pieces(offset, into.length, async (_at, done, piece, { extent, rel, grain, grainStart }) => {
      const view = into.subarray(done, done + piece);
      if (grain.kind === 'unallocated' || grain.kind === 'zero') view.fill(0);
      else if (extent.flat) await readClamped(extent.file, extent.flatOffset + rel, view);
      else if (grain.kind === 'data') await extent.sparse.readStored(grain.host + (rel - grainStart), view);
      else view.set((await extent.sparse.readCompressed(grain.host, grainStart)).subarray(rel - grainStart, rel - grainStart + piece));
    });
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, data.length, this.size, true);
    await this.pieces(offset, data.length, async (at, done, piece, where) => {
      const bytes = data.subarray(done, done + piece);
      if (where.grain.kind === 'data') return this.file.write(inPlace(where, this.file.size), bytes);
      await this.allocations.run(async () => {
        // Allocated while this waited its turn: written in place (or refused, compressed).
        const now = await this.locate(at);
        if (now.grain.kind === 'data') return this.file.write(inPlace(now, this.file.size), bytes);
        const sparse = (now.extent as Extent & { flat: false }).sparse;
        if (sparse.compressed) checkStreamWrite(now, at, piece);
        await sparse.allocate(now.rel, bytes);
      });
    });
  }

  async writeZeroes(offset: number, bytes: number, _options: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkDeviceRequest('write', offset, bytes, this.size, true);
    await this.pieces(offset, bytes, async (at, _done, piece, where) => {
      // Unallocated and zero grains read as zeroes already.
      if (where.grain.kind === 'data') await writeZeroBytes(this.file, inPlace(where, this.file.size), piece);
      else if (where.grain.kind === 'compressed') checkStreamWrite(where, at, piece);
    });
  }

  async blockStatus(offset: number, bytes: number, options?: BlockStatusOptions): Promise<BlockStatus> {
    checkDeviceRequest('read', offset, 0, this.size, true);
    const length = Math.max(0, Math.min(bytes, this.size - offset));
    if (length === 0) return { offset, bytes: 0, kind: 'unallocated', depth: 0 };
    const extent = this.extentAt(offset);
    const rel = offset - extent.start;
    const inExtent = Math.min(length, extent.bytes - rel);
    if (extent.flat) {
      const host = extent.flatOffset + rel;
      // A flat extent's holes are its file's (qemu-img looks into the file too).
      if (extent.file.allocation) {
        const a = await extent.file.allocation(host, inExtent);
        return { offset, bytes: Math.min(inExtent, a.bytes), kind: a.allocated ? 'data' : 'zero', depth: 0, hostOffset: host };
      }
      return { offset, bytes: inExtent, kind: 'data', depth: 0, hostOffset: host };
    }
    // Runs stop at the extent's end (the next extent is another file).
    const { grain, bytes: run } = await extent.sparse.run(rel, inExtent, options?.contiguous === true);
    const kind = kindOf(grain);
    const host = grain.kind === 'data' ? grain.host + (rel % extent.sparse.grainBytes) : undefined;
    const depth = kind === 'unallocated' ? 1 : 0;
    return host === undefined ? { offset, bytes: run, kind, depth } : { offset, bytes: run, kind, depth, hostOffset: host };
  }

  flush(): Promise<void> {
    return this.file.flush();
  }

  async close(): Promise<void> {
    await closeExtents(this.extents.filter((e) => e.file !== this.file));
    await this.file.close();
  }

  /** The extents as qemu-img info lists them. */
  extentInfo(): ExtentInfo[] {
    return this.extents.map((e) => ({
      fileName: e.fileName,
      type: e.type,
      virtualSize: e.bytes,
      compressed: !e.flat && e.sparse.compressed,
      ...(e.flat ? {} : { clusterSize: e.sparse.grainBytes }),
    }));
  }

  async info(): Promise<ImageInfo> {
    const first = this.extents[0]!;
    const same = this.extents.every((e) => e.flat === first.flat && (e.flat || (!first.flat && e.sparse.grainBytes === first.sparse.grainBytes && e.sparse.compressed === first.sparse.compressed)));
    return {
      format: 'vmdk',
      virtualSize: this.size,
      fileSize: this.file.size,
      ...(same && !first.flat ? { clusterSize: first.sparse.grainBytes } : {}),
      details: { createType: this.createType, cid: this.cid, parentCid: this.parentCid, extents: this.extentInfo() },
    };
  }

  private checkWritable(): void {
    if (this.readOnly) throw new FormatError('vmdk image is open read-only', 'read-only');
    const first = this.extents[0]!;
    if (!first.flat && first.sparse.header.gdAtEnd) {
      throw new FormatError('vmdk stream with its grain directory in the footer cannot be written (diskmirror writes the streamOptimized images qemu-img makes)', 'gd_offset');
    }
  }
}

/** A stream's grain is written once, whole: what QEMU refuses, refused with its errno. */
function checkStreamWrite(where: { extent: Extent; rel: number; grain: Grain; grainStart: number }, at: number, piece: number): void {
  if (where.grain.kind === 'compressed' || where.grain.kind === 'data') {
    throw new BlockError('EIO', 'write', at, piece, 'Could not write to allocated cluster for streamOptimized (a vmdk stream takes each grain once)');
  }
  const grainEnd = Math.min(where.grainStart + (where.extent as Extent & { flat: false }).sparse.grainBytes, where.extent.bytes);
  if (where.rel !== where.grainStart || where.rel + piece !== grainEnd) {
    throw new BlockError('EINVAL', 'write', at, piece, 'a vmdk stream (streamOptimized) takes whole grains only');
  }
}

/** Where a stored grain's byte is in the file; a grain the table places past the end of the file is not written there (the file would grow to it). */
function inPlace(where: { rel: number; grain: Grain; grainStart: number }, fileSize: number): number {
  const host = (where.grain as Grain & { kind: 'data' }).host;
  if (host >= fileSize) {
    throw new FormatError(`vmdk grain table entry for offset ${where.grainStart} is sector ${host / SECTOR_BYTES}, past the end of the file (${fileSize} bytes): not written (qemu-img check: points after EOF)`, 'grain table');
  }
  return host + (where.rel - where.grainStart);
}

function kindOf(grain: Grain): BlockStatusKind {
  return grain.kind === 'unallocated' ? 'unallocated' : grain.kind === 'zero' ? 'zero' : 'data';
}

/** Reads `into` at `offset` of `file`; what lies past the file's end reads as zeroes (QEMU pads a short read). */
async function readClamped(file: BlockDevice, offset: number, into: Uint8Array): Promise<void> {
  const inFile = Math.max(0, Math.min(into.length, file.size - offset));
  if (inFile > 0) await file.read(offset, into.subarray(0, inFile));
  into.fill(0, inFile);
}

async function closeExtents(extents: Extent[]): Promise<void> {
  for (const e of extents) await e.file.close().catch(() => {});
}

/** Opens the extent files a descriptor names, beside it (through `resolve`), in order. */
async function openExtents(text: string, name: string, resolve: ExtentResolver | undefined): Promise<Extent[]> {
  const lines = parseExtentLines(text);
  const extents: Extent[] = [];
  try {
    let start = 0;
    for (const line of lines) {
      if (line.type === 'VMFSSPARSE' || line.type === 'SESPARSE') throw new FormatError(`vmdk extent '${line.name}' of type ${line.type} is not supported`, 'extent');
      if (!resolve) throw new FormatError(`vmdk image '${name}' names extent file '${line.name}' and there is no way to open it here`, 'extent');
      let device: BlockDevice;
      try {
        const resolved = await resolve(line.name, { readOnly: true, from: name });
        device = 'device' in resolved ? resolved.device : resolved;
      } catch (err) {
        if (err instanceof FormatError) throw err;
        const message = err instanceof Error ? err.message : String(err);
        throw new FormatError(`Could not open extent file '${line.name}' of '${name}': ${message}`, 'extent', { cause: err });
      }
      let extent: Extent;
      if (line.type === 'SPARSE') {
        try {
          const sparse = await SparseExtent.open(device, false, line.name);
          extent = { start, bytes: sparse.bytes, file: device, fileName: line.name, type: line.type, flat: false, sparse };
        } catch (err) {
          await device.close().catch(() => {});
          throw err;
        }
      } else {
        extent = { start, bytes: line.sectors * SECTOR_BYTES, file: device, fileName: line.name, type: line.type, flat: true, flatOffset: line.flatOffsetBytes };
      }
      extents.push(extent);
      start += extent.bytes;
      if (!Number.isSafeInteger(start)) throw new FormatError(`vmdk descriptor ${name}: the extents add up to more than diskmirror reads`, 'extent');
    }
    return extents;
  } catch (err) {
    await closeExtents(extents);
    throw err;
  }
}

