/**
 * Opening an image: probe (or take) the format, and wrap the file in its
 * driver. Backing files are found through `resolve`, relative to the image
 * (the same directory, in OPFS).
 */
import type { BlockDevice } from '../block/block-device.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES } from './image-format.js';
import { probeFormat } from './probe.js';
import { RawImage } from './raw.js';

/** Opens a backing file named `name` (as the image's header spells it). */
export type BackingResolver = (name: string, options: { readOnly: boolean }) => Promise<BlockDevice>;

export interface OpenOptions {
  format?: FormatName;
  /** How to reach backing files; without it, an image with a backing file cannot be opened. */
  resolve?: BackingResolver;
  /** The image's own name, for messages and loop detection. */
  name?: string;
}

export async function openImage(file: BlockDevice, options: OpenOptions = {}): Promise<ImageFormat> {
  if (options.format !== undefined && !FORMAT_NAMES.includes(options.format)) {
    throw new FormatError(`Unknown image format '${options.format}' (expected raw or qcow2)`, 'format');
  }
  const format = options.format ?? (await probeFormat(file));
  switch (format) {
    case 'raw':
      return new RawImage(file);
    case 'qcow2':
      throw new FormatError('qcow2 images are not supported yet', 'format');
  }
}
