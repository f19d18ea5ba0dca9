/**
 * What an image's name says of its format (copy.qcow2: qcow2): the Mirror
 * form makes a new target in that format, and an image brought in whose content is
 * of another format says so.
 */
import type { FormatName } from '../format/image-format.js';

/** The format a new target's name asks for (copy.qcow2: qcow2), if its extension names one. */
const FORMAT_BY_EXTENSION: Readonly<Record<string, FormatName>> = { qcow2: 'qcow2', raw: 'raw', img: 'raw', vhd: 'vpc', vdi: 'vdi', vhdx: 'vhdx', vmdk: 'vmdk' };

export function formatFromName(name: string): FormatName | null {
  const ext = /\.([A-Za-z0-9]+)$/.exec(name)?.[1]?.toLowerCase();
  return (ext && FORMAT_BY_EXTENSION[ext]) || null;
}

/** Extensions that name a format for a new image but are worn by any format brought in (cloud images are qcow2 named .img). */
const ANY_FORMAT = new Set(['img']);

/** A word when a name says one format and the content (which decides, as qemu-img's probe does) is another; else nothing. */
export function nameMismatch(name: string, format: FormatName | undefined): string {
  const ext = /\.([A-Za-z0-9]+)$/.exec(name)?.[1]?.toLowerCase();
  const named = ext && !ANY_FORMAT.has(ext) ? formatFromName(name) : null;
  if (!format || !named || named === format) return '';
  return ` Its name says ${named}, but its content is ${format}: it is kept as ${format} (qemu-img reads it so too); rename it, or check the file.`;
}
