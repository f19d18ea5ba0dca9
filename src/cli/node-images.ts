/** Images as files on disk, for the CLI: open (probing the format), create. */
import { dirname, resolve as resolvePath } from 'node:path';
import { NodeFileDevice } from '../block/node-file.js';
import { type FormatName, type ImageFormat, FormatError, FORMAT_NAMES } from '../format/image-format.js';
import { openImage } from '../format/open.js';
import { RawImage } from '../format/raw.js';

export function checkFormat(format: string | undefined, what = 'format'): FormatName | undefined {
  if (format === undefined) return undefined;
  if (!FORMAT_NAMES.includes(format as FormatName)) {
    throw new FormatError(`Unknown ${what} '${format}' (expected raw or qcow2)`, 'format');
  }
  return format as FormatName;
}

export async function openImageFile(path: string, options: { format?: FormatName; readOnly?: boolean } = {}): Promise<ImageFormat> {
  const file = await NodeFileDevice.open(path, { readOnly: options.readOnly ?? false });
  try {
    return await openImage(file, {
      name: path,
      ...(options.format ? { format: options.format } : {}),
      // Backing files are named relative to the image that names them.
      resolve: (name, o) => NodeFileDevice.open(resolvePath(dirname(path), name), { readOnly: o.readOnly }),
    });
  } catch (err) {
    await file.close();
    throw err;
  }
}

export interface CreateOptions {
  format: FormatName;
  size: number;
}

export async function createImageFile(path: string, options: CreateOptions): Promise<ImageFormat> {
  const file = await NodeFileDevice.open(path, { create: true });
  try {
    if (file.size !== 0) await file.resize(0);
    if (options.format !== 'raw') throw new FormatError(`Creating ${options.format} images is not supported yet`, 'format');
    return await RawImage.create(file, options.size);
  } catch (err) {
    await file.close();
    throw err;
  }
}
