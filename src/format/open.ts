/**
 * Opening an image: probe (or take) the format, and wrap the file in its
 * driver. Backing files are found through `resolve`, relative to the image
 * that names them (the same directory, in OPFS). A loop in a chain is an
 * error.
 *
 * qemu-img 7.2 has no limit on a chain's depth: it converts a chain 3000
 * images deep (in minutes; qemu-io crashes reading it) and lists 10000 with
 * `info --backing-chain`. diskmirror opens chains up to MAX_CHAIN_LENGTH
 * images, every command taking a few seconds at that depth, and refuses a
 * deeper one with a message that names the limit: each image's driver
 * recurses into its backing image (info() without an await between levels
 * overflows the stack between 6000 and 6500 images under Node), and a
 * resolver that never runs out of names (a server inventing a backing file
 * for every URL) must end somewhere. Each link costs the same whatever its
 * depth: the loop check is a set, and the chain so far is shared, not
 * copied.
 */
import { type BlockDevice, ImageConflictError } from '../block/block-device.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES, formatNamesText } from './image-format.js';
import { probeFormat } from './probe.js';
import { createQcow2, type Qcow2CreateOptions } from './qcow2/create.js';
import { Qcow2Image } from './qcow2/image.js';
import { type RawPreallocation, RawImage } from './raw.js';
import { createVdi } from './vdi/create.js';
import { VdiImage } from './vdi/image.js';
import { type VhdxSubformat, createVhdx } from './vhdx/create.js';
import { VhdxImage } from './vhdx/image.js';
import { type VpcSubformat, createVpc } from './vpc/create.js';
import { VpcImage } from './vpc/image.js';
import type { VmdkAdapterType, VmdkSubformat } from './vmdk/constants.js';
import { createVmdk } from './vmdk/create.js';
import { VmdkImage } from './vmdk/image.js';

/** A backing file as a resolver found it: the device, and a name that identifies it (for loops and messages). */
export interface ResolvedBacking {
  device: BlockDevice;
  name: string;
}

/**
 * Opens a backing file named `name` (as the image's header spells it).
 * `from` is the name of the image that names it (as given to openImage, or
 * as a resolver returned it), so a resolver can look next to it.
 */
export type BackingResolver = (name: string, options: { readOnly: boolean; from?: string }) => Promise<BlockDevice | ResolvedBacking>;

/** Longest backing chain opened (the image itself included). */
export const MAX_CHAIN_LENGTH = 4096;

/** The images of a chain opened so far, top first: the names, as a resolver returned them. */
interface ChainSoFar {
  names: string[];
  seen: Set<string>;
}

function newChain(name: string): ChainSoFar {
  return { names: [name], seen: new Set([name]) };
}

export interface OpenOptions {
  format?: FormatName;
  /** How to reach backing files; without it, an image with a backing file cannot be opened. */
  resolve?: BackingResolver;
  /** The image's own name, for messages and loop detection. */
  name?: string;
  /** Open read-only (default: as the device). Backing images are always read-only. */
  readOnly?: boolean;
  /** qcow2: store whole, aligned cluster writes compressed (zlib). */
  compress?: boolean;
  /** Opened to be checked: vhdx leaves its BAT's blocks for the check to report (qemu-img's BDRV_O_CHECK). */
  forCheck?: boolean;
}

export async function openImage(file: BlockDevice, options: OpenOptions = {}): Promise<ImageFormat> {
  return openLink(file, options, newChain(options.name ?? 'image'));
}

function checkFormatName(format: string | undefined, what: string): FormatName | undefined {
  if (format !== undefined && !FORMAT_NAMES.includes(format as FormatName)) {
    throw new FormatError(`Unknown ${what} '${format}' (expected ${formatNamesText()})`, 'format');
  }
  return format as FormatName | undefined;
}

/** Opens one image of a chain; `chain` ends with its name, and grows as its backing files open (a chain is a line). */
async function openLink(file: BlockDevice, options: OpenOptions, chain: ChainSoFar): Promise<ImageFormat> {
  const format = checkFormatName(options.format, 'image format') ?? (await probeFormat(file));
  if (options.compress && format !== 'qcow2') throw new FormatError('Compressed writes need a qcow2 image', 'format');
  switch (format) {
    case 'raw':
      return new RawImage(file);
    case 'vpc':
      return VpcImage.open(file, options.readOnly !== undefined ? { readOnly: options.readOnly } : {});
    case 'vdi':
      return VdiImage.open(file, options.readOnly !== undefined ? { readOnly: options.readOnly } : {});
    case 'vhdx':
      return VhdxImage.open(file, { ...(options.readOnly !== undefined ? { readOnly: options.readOnly } : {}), ...(options.forCheck ? { forCheck: true } : {}) });
    case 'vmdk':
      // Extent files are found as backing files are: beside the descriptor, through the resolver.
      return VmdkImage.open(file, { ...(options.readOnly !== undefined ? { readOnly: options.readOnly } : {}), ...(options.resolve ? { resolve: options.resolve } : {}), name: chain.names[chain.names.length - 1]! });
    case 'qcow2':
      return Qcow2Image.open(file, {
        ...(options.readOnly !== undefined ? { readOnly: options.readOnly } : {}),
        ...(options.compress ? { compress: true } : {}),
        openBacking: (name, backingFormat) => openBacking(name, backingFormat, options, chain),
      });
  }
}

async function openBacking(name: string, backingFormat: string | undefined, options: OpenOptions, chain: ChainSoFar): Promise<ImageFormat> {
  const from = chain.names[chain.names.length - 1]!;
  if (!options.resolve) {
    throw new FormatError(`Image '${from}' has a backing file '${name}' and there is no way to open it here`, 'backing_file');
  }
  if (chain.names.length >= MAX_CHAIN_LENGTH) {
    throw new FormatError(`Backing chain of '${chain.names[0]}' is longer than ${MAX_CHAIN_LENGTH} images`, 'backing_file');
  }
  const format = checkFormatName(backingFormat, `backing file format for '${name}'`);
  let resolved: BlockDevice | ResolvedBacking;
  try {
    resolved = await options.resolve(name, { readOnly: true, from });
  } catch (err) {
    // A backing file in use elsewhere is a conflict, said as such (QEMU: "Failed to get ... lock").
    if (err instanceof ImageConflictError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new FormatError(`Could not open backing file '${name}' of '${from}': ${message}`, 'backing_file', { cause: err });
  }
  const device = 'device' in resolved ? resolved.device : resolved;
  const key = 'device' in resolved ? resolved.name : name;
  if (chain.seen.has(key)) {
    await device.close().catch(() => {});
    const loop = chain.names.slice(chain.names.indexOf(key));
    throw new FormatError(`Backing file loop: '${from}' names '${name}', which is already in the chain (${describeLoop([...loop, key])})`, 'backing_file');
  }
  chain.names.push(key);
  chain.seen.add(key);
  try {
    return await openLink(device, { ...(format ? { format } : {}), resolve: options.resolve, name: key, readOnly: true }, chain);
  } catch (err) {
    await device.close().catch(() => {});
    throw err;
  }
}

/** The images of a loop, abridged when there are many. */
function describeLoop(names: string[]): string {
  const shown = names.length <= 8 ? names : [...names.slice(0, 3), `... ${names.length - 6} more ...`, ...names.slice(-3)];
  return shown.join(' -> ');
}

export interface CreateImageOptions extends Omit<Qcow2CreateOptions, 'preallocation'> {
  format: FormatName;
  /** raw: off or full; qcow2: off or metadata. */
  preallocation?: 'off' | 'metadata' | 'full';
  /** vpc, vhdx: dynamic (the default) or fixed; vmdk: monolithicSparse (the default) or streamOptimized. */
  subformat?: VpcSubformat | VhdxSubformat | VmdkSubformat;
  /** vmdk: the adapter the descriptor names (ide, the default, buslogic, lsilogic, legacyESX). */
  adapterType?: VmdkAdapterType;
  /** vpc: keep the size as given instead of rounding it to a CHS geometry. */
  forceSize?: boolean;
  /** vdi: every block allocated up front. */
  static?: boolean;
  /** vhdx: bytes a block (0: chosen from the size) and of the log. */
  blockSize?: number;
  logSize?: number;
}

/** The options each format takes beside size (and format). */
const FORMAT_OPTIONS: Record<FormatName, readonly (keyof CreateImageOptions)[]> = {
  raw: ['preallocation'],
  qcow2: ['compat', 'clusterSize', 'refcountBits', 'extendedL2', 'compressionType', 'lazyRefcounts', 'backingFile', 'backingFormat', 'preallocation'],
  vpc: ['subformat', 'forceSize'],
  vdi: ['static'],
  vhdx: ['subformat', 'blockSize', 'logSize'],
  vmdk: ['subformat', 'adapterType'],
};

/** The name qemu-img gives an option (as -o spells it). */
const OPTION_NAMES: Partial<Record<keyof CreateImageOptions, string>> = {
  clusterSize: 'cluster_size',
  refcountBits: 'refcount_bits',
  extendedL2: 'extended_l2',
  compressionType: 'compression_type',
  lazyRefcounts: 'lazy_refcounts',
  backingFile: 'backing_file',
  backingFormat: 'backing_fmt',
  forceSize: 'force_size',
  blockSize: 'block_size',
  logSize: 'log_size',
  adapterType: 'adapter_type',
};

function refuseForeignOptions(format: FormatName, options: CreateImageOptions): void {
  const allowed = new Set<string>(FORMAT_OPTIONS[format]);
  const known = new Set<string>(Object.values(FORMAT_OPTIONS).flat());
  const foreign = (Object.keys(options) as (keyof CreateImageOptions)[]).find((k) => options[k] !== undefined && known.has(k) && !allowed.has(k));
  if (foreign) throw new FormatError(`${format} images take no '${OPTION_NAMES[foreign] ?? foreign}' option`, OPTION_NAMES[foreign] ?? foreign);
}

/**
 * Creates an image of `options.format` on an empty device and opens it
 * (read-write) with `open` (for the backing file, if any).
 */
export async function createImage(file: BlockDevice, options: CreateImageOptions, open: OpenOptions = {}): Promise<ImageFormat> {
  const format = checkFormatName(options.format, 'image format')!;
  if (format === 'vpc' || format === 'vdi' || format === 'vmdk') {
    refuseForeignOptions(format, options);
    if (format === 'vpc') await createVpc(file, { size: options.size, ...(options.subformat ? { subformat: options.subformat as VpcSubformat } : {}), ...(options.forceSize ? { forceSize: true } : {}) });
    else if (format === 'vmdk') await createVmdk(file, { size: options.size, ...(options.subformat ? { subformat: options.subformat as VmdkSubformat } : {}), ...(options.adapterType ? { adapterType: options.adapterType } : {}), ...(open.name ? { fileName: open.name } : {}) });
    else await createVdi(file, { size: options.size, ...(options.static ? { static: true } : {}) });
    return openLink(file, { ...open, format, readOnly: false }, newChain(open.name ?? 'image'));
  }
  if (format === 'vhdx') {
    refuseForeignOptions(format, options);
    const { subformat, blockSize, logSize } = options;
    await createVhdx(file, { size: options.size, ...(subformat ? { subformat: subformat as VhdxSubformat } : {}), ...(blockSize !== undefined ? { blockSize } : {}), ...(logSize !== undefined ? { logSize } : {}) });
    return openLink(file, { ...open, format, readOnly: false }, newChain(open.name ?? 'image'));
  }
  if (format === 'raw') {
    const qcow2Only = (['compat', 'clusterSize', 'refcountBits', 'extendedL2', 'compressionType', 'lazyRefcounts', 'backingFile', 'backingFormat'] as const).filter(
      (k) => options[k] !== undefined,
    );
    if (qcow2Only.length > 0) throw new FormatError(`raw images take no '${qcow2Only[0]}' option`, qcow2Only[0]);
    refuseForeignOptions('raw', options);
    const prealloc = options.preallocation ?? 'off';
    if (prealloc !== 'off' && prealloc !== 'full') throw new FormatError(`Unsupported preallocation mode '${prealloc}' for raw (expected off or full)`, 'preallocation');
    return RawImage.create(file, options.size, { preallocation: prealloc as RawPreallocation });
  }
  refuseForeignOptions('qcow2', options);
  const { format: _format, preallocation, subformat: _subformat, forceSize: _forceSize, static: _static, blockSize: _blockSize, logSize: _logSize, adapterType: _adapterType, ...rest } = options;
  if (preallocation === 'full') throw new FormatError("Unsupported preallocation mode 'full' for qcow2 (expected off or metadata)", 'preallocation');
  await createQcow2(file, { ...rest, ...(preallocation ? { preallocation } : {}) });
  return openLink(file, { ...open, format: 'qcow2', readOnly: false }, newChain(open.name ?? 'image'));
}
