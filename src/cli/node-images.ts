/** Images as files on disk, for the CLI: open (probing the format, following backing chains), create. */
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import type { BlockDevice } from '../block/block-device.js';
import { type OptionSpec, type ParsedArgs, parseArgs, UsageError } from './args.js';
import { NodeFileDevice } from '../block/node-file.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES } from '../format/image-format.js';
import { type BackingResolver, type CreateImageOptions, createImage, openImage } from '../format/open.js';

export function checkFormat(format: string | undefined, what = 'format'): FormatName | undefined {
  if (format === undefined) return undefined;
  if (!FORMAT_NAMES.includes(format as FormatName)) {
    throw new FormatError(`Unknown ${what} '${format}' (expected raw or qcow2)`, 'format');
  }
  return format as FormatName;
}

/** Backing files are named relative to the directory of the image that names them. */
export const nodeResolver: BackingResolver = async (name, options) => {
  const base = options.from !== undefined ? dirname(options.from) : process.cwd();
  const path = isAbsolute(name) ? name : resolvePath(base, name);
  return { device: await NodeFileDevice.open(path, { readOnly: options.readOnly }), name: path };
};

export interface OpenFileOptions {
  format?: FormatName;
  readOnly?: boolean;
  /** qcow2: store whole, aligned cluster writes compressed. */
  compress?: boolean;
}

export async function openImageFile(path: string, options: OpenFileOptions = {}): Promise<ImageFormat> {
  const file = await NodeFileDevice.open(path, { readOnly: options.readOnly ?? false });
  try {
    return await openImage(file, {
      name: resolvePath(path),
      ...(options.format ? { format: options.format } : {}),
      ...(options.compress ? { compress: true } : {}),
      resolve: nodeResolver,
    });
  } catch (err) {
    await file.close();
    throw err;
  }
}

/**
 * How a created image treats flushes: 'writeback' flushes when asked;
 * 'unsafe' ignores flushes while the image is open and flushes nothing
 * (qemu-img convert's default for its target: a copy cut short is useless
 * anyway, and the ordering flushes cost more than the copy).
 */
export type CacheMode = 'writeback' | 'unsafe';

/** A device whose flushes do nothing. */
class UnsafeCacheDevice implements BlockDevice {
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(offset: number, into: Uint8Array): Promise<void> {
    return this.inner.read(offset, into);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.inner.write(offset, data);
  }
  async flush(): Promise<void> {}
  close(): Promise<void> {
    return this.inner.close();
  }
  resize(bytes: number): Promise<void> {
    return this.inner.resize!(bytes);
  }
}

export type CreateOptions = CreateImageOptions & { compress?: boolean; cache?: CacheMode };

/** Creates (or truncates and recreates) an image file and opens it read-write. */
export async function createImageFile(path: string, options: CreateOptions): Promise<ImageFormat> {
  const node = await NodeFileDevice.open(path, { create: true });
  const file: BlockDevice = options.cache === 'unsafe' ? new UnsafeCacheDevice(node) : node;
  try {
    if (file.size !== 0) await file.resize!(0);
    const { compress, cache: _cache, ...create } = options;
    return await createImage(file, create, { name: resolvePath(path), resolve: nodeResolver, ...(compress ? { compress: true } : {}) });
  } catch (err) {
    await file.close();
    throw err;
  }
}

/** The arguments of a command that reads one image: [-f FMT] [--output=human|json] IMAGE, plus its own flags. */
export interface SingleImageArgs {
  path: string;
  output: 'human' | 'json';
  format: FormatName | undefined;
  options: ParsedArgs['options'];
}

export function parseSingleImage(argv: string[], extra: OptionSpec[] = []): SingleImageArgs {
  const { options, positionals } = parseArgs(argv, [{ name: 'format', short: 'f', value: true }, { name: 'output', value: true }, ...extra]);
  if (positionals.length !== 1) throw new UsageError('expected exactly one IMAGE');
  const output = (options.output as string | undefined) ?? 'human';
  if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be human or json, not '${output}'`);
  return { path: positionals[0]!, output, format: checkFormat(options.format as string | undefined), options };
}

/** Opens the image of a single-image command, read-only. */
export function openForReading(args: SingleImageArgs): Promise<ImageFormat> {
  return openImageFile(args.path, { readOnly: true, ...(args.format ? { format: args.format } : {}) });
}
