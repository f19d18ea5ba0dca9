/**
 * Images as files on disk, for the CLI: open (probing the format, following
 * backing chains) and create, always through image-access.ts, so every file
 * is locked and a new one appears under its name only when it is whole.
 */
import { resolve as resolvePath } from 'node:path';
import { type OptionSpec, type ParsedArgs, parseArgs, UsageError } from './args.js';
import type { BlockDevice } from '../block/block-device.js';
import { UnsafeCacheDevice } from '../block/unsafe-cache.js';
import { NodeFileStore } from '../block/node-store.js';
import { NbdAwareStore } from '../block/nbd/store.js';
import { nodeConnector } from '../block/nbd/node-transport.js';
import { isNbdUri } from '../block/nbd/uri.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES, formatNamesText } from '../format/image-format.js';
import { type NewImage, type OpenedImage, createInStore, openChain } from '../format/image-access.js';
import type { CreateImageOptions } from '../format/open.js';

/** Files as the command sees them: paths relative to the working directory, and NBD exports named by URI. */
export const store = new NbdAwareStore(new NodeFileStore(), nodeConnector, (path) => resolvePath(path));

/** The format of an image unless the user says otherwise: probed for a file, raw for an NBD export (as qemu-img's -f raw over nbd). */
export function defaultFormat(name: string, format: FormatName | undefined): FormatName | undefined {
  return format ?? (isNbdUri(name) ? 'raw' : undefined);
}

export function checkFormat(format: string | undefined, what = 'format'): FormatName | undefined {
  if (format === undefined) return undefined;
  if (!FORMAT_NAMES.includes(format as FormatName)) {
    throw new FormatError(`Unknown ${what} '${format}' (expected ${formatNamesText()})`, 'format');
  }
  return format as FormatName;
}

export interface OpenFileOptions {
  format?: FormatName;
  readOnly?: boolean;
  /** Read-only without locks (-U, as qemu-img): an image in use can be looked at. */
  forceShare?: boolean;
  /** qcow2: store whole, aligned cluster writes compressed. */
  compress?: boolean;
  /** How an image opened to be written treats flushes (default writeback). */
  cache?: CacheMode;
  /** Opened to be checked (see OpenOptions). */
  forCheck?: boolean;
}

/** Opens an image file and its backing chain, locked (shared read-only, exclusive read-write). */
export function openImageChain(path: string, options: OpenFileOptions = {}): Promise<OpenedImage> {
  const format = defaultFormat(path, options.format);
  return openChain(store, path, {
    readOnly: options.readOnly ?? false,
    ...(options.forceShare ? { forceShare: true } : {}),
    ...(format ? { format } : {}),
    ...(options.compress ? { compress: true } : {}),
    ...(options.cache === 'unsafe' ? { wrap: unsafeCache } : {}),
    ...(options.forCheck ? { forCheck: true } : {}),
  });
}

const unsafeCache = (device: BlockDevice): BlockDevice => new UnsafeCacheDevice(device);

export async function openImageFile(path: string, options: OpenFileOptions = {}): Promise<ImageFormat> {
  return (await openImageChain(path, options)).image;
}

/**
 * How an image written by a command treats flushes: 'writeback' flushes
 * when asked; 'unsafe' ignores flushes while the image is open and flushes
 * nothing (qemu-img convert's default for its target, created or written in
 * place with -n: a copy cut short is useless anyway, and the ordering
 * flushes cost more than the copy).
 */
export type CacheMode = 'writeback' | 'unsafe';

export type CreateOptions = CreateImageOptions & { compress?: boolean; cache?: CacheMode };

/**
 * Makes a new image that will replace whatever `path` names once published
 * (made aside, so a failure leaves the old file as it was).
 */
export function prepareImageFile(path: string, options: CreateOptions): Promise<NewImage> {
  const { compress, cache, ...create } = options;
  return createInStore(store, path, create, {
    replace: true,
    ...(cache === 'unsafe' ? { wrap: unsafeCache } : {}),
    ...(compress ? { compress: true } : {}),
  });
}

/** Creates an image file (replacing one of that name) and opens it read-write. */
export async function createImageFile(path: string, options: CreateOptions): Promise<ImageFormat> {
  const created = await prepareImageFile(path, options);
  try {
    await created.publish();
  } catch (err) {
    await created.discard();
    throw err;
  }
  return created.image;
}

/** The arguments of a command that reads one image: [-f FMT] [--output=human|json] IMAGE, plus its own flags. */
export interface SingleImageArgs {
  path: string;
  output: 'human' | 'json';
  format: FormatName | undefined;
  options: ParsedArgs['options'];
}

export function parseSingleImage(argv: string[], extra: OptionSpec[] = []): SingleImageArgs {
  const { options, positionals } = parseArgs(argv, [{ name: 'format', short: 'f', value: true }, { name: 'output', value: true }, { name: 'force-share', short: 'U' }, ...extra]);
  if (positionals.length !== 1) throw new UsageError('expected exactly one IMAGE');
  const output = (options.output as string | undefined) ?? 'human';
  if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be human or json, not '${output}'`);
  return { path: positionals[0]!, output, format: checkFormat(options.format as string | undefined), options };
}

/** Opens the image of a single-image command, read-only (without locks with -U). */
export function openForReading(args: SingleImageArgs, extra: { forCheck?: boolean } = {}): Promise<ImageFormat> {
  return openImageFile(args.path, { readOnly: true, ...(args.format ? { format: args.format } : {}), ...(args.options['force-share'] ? { forceShare: true } : {}), ...extra });
}
