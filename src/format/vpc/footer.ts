/**
 * The VHD footer: finding it (a copy at offset 0 for dynamic images, the
 * last sector for fixed ones, as qemu-img looks), checking it, the virtual
 * size qemu-img derives from it, and building the footer of a new image.
 */
import { FormatError } from '../image-format.js';
import {
  CURRENT_SIZE_CREATORS,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  FOOTER_BYTES,
  FOOTER_COOKIE,
  FT_CHECKSUM,
  FT_COOKIE,
  FT_CREATOR_APP,
  FT_CREATOR_OS,
  FT_CREATOR_VERSION,
  FT_CURRENT_SIZE,
  FT_CYLINDERS,
  FT_DATA_OFFSET,
  FT_DISK_TYPE,
  FT_FEATURES,
  FT_HEADS,
  FT_ORIGINAL_SIZE,
  FT_SECTORS_PER_TRACK,
  FT_TIMESTAMP,
  FT_UUID,
  FT_VERSION,
  MAX_CYLINDERS,
  MAX_GEOMETRY_SECTORS,
  MAX_HEADS,
  MAX_SECTORS,
  MAX_SECTORS_PER_TRACK,
  SECTOR_BYTES,
  TIMESTAMP_BASE_SECONDS,
} from './constants.js';

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export interface VpcFooter {
  /** The footer's 512 bytes as read (written back as they are when the footer moves). */
  bytes: Uint8Array;
  diskType: typeof DISK_TYPE_FIXED | typeof DISK_TYPE_DYNAMIC;
  /** Where the dynamic disk header is (dynamic images). */
  dataOffset: number;
  creatorApp: string;
  currentSize: number;
  geometry: Geometry;
  /** The guest's size, as qemu-img computes it (see virtualSectors). */
  virtualSize: number;
}

/** The one's complement of the sum of the bytes, the checksum field counted as zero. */
export function vpcChecksum(bytes: Uint8Array, checksumAt: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < checksumAt || i >= checksumAt + 4) sum += bytes[i]!;
  return ~sum >>> 0;
}

export function ascii(bytes: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + length));
}

export function hasFooterCookie(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && ascii(bytes, FT_COOKIE, 8) === FOOTER_COOKIE;
}

/** A big-endian 64-bit field as a number; refuses one a number cannot hold exactly. */
export function u64Field(view: DataView, at: number, what: string, field: string): number {
  const hi = view.getUint32(at, false);
  const lo = view.getUint32(at + 4, false);
  if (hi >= 2 ** 21) throw new FormatError(`vpc ${what} field ${field} is 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')}: too large`, field);
  return hi * 2 ** 32 + lo;
}

/**
 * The guest's sectors: qemu-img's rule. Virtual PC (and qemu-img before
 * force_size) size a disk by its CHS geometry, the footer's current size
 * being larger; Hyper-V and the other creators of CURRENT_SIZE_CREATORS use
 * the current size, and so does any image whose geometry is the largest
 * (a disk too large for CHS).
 */
export function virtualSectors(creatorApp: string, geometry: Geometry, currentSize: number): number {
  const chs = geometry.cylinders * geometry.heads * geometry.sectorsPerTrack;
  if (CURRENT_SIZE_CREATORS.includes(creatorApp) || chs === MAX_GEOMETRY_SECTORS) return Math.floor(currentSize / SECTOR_BYTES);
  return chs;
}

/** Parses and checks a footer read at `where` ('start' or 'end' of the file). */
export function parseFooter(bytes: Uint8Array, where: 'start' | 'end'): VpcFooter {
  if (!hasFooterCookie(bytes)) throw new FormatError('Not a vpc image: no "conectix" footer at the start or the end of the file', 'cookie');
  const view = new DataView(bytes.buffer, bytes.byteOffset, FOOTER_BYTES);
  const stored = view.getUint32(FT_CHECKSUM, false);
  const computed = vpcChecksum(bytes.subarray(0, FOOTER_BYTES), FT_CHECKSUM);
  if (stored !== computed) throw new FormatError(`vpc footer field checksum is 0x${stored.toString(16)}, the footer sums to 0x${computed.toString(16)}`, 'checksum');
  const type = view.getUint32(FT_DISK_TYPE, false);
  if (type === DISK_TYPE_DIFFERENCING) throw new FormatError('vpc footer field disk_type is 4: differencing images are not supported', 'disk_type');
  if (type !== DISK_TYPE_FIXED && type !== DISK_TYPE_DYNAMIC) throw new FormatError(`vpc footer field disk_type is ${type} (expected 2, fixed, or 3, dynamic)`, 'disk_type');
  // qemu-img looks for the dynamic header only through the copy at the start; a footer found at the end describes a fixed image.
  if (where === 'end' && type !== DISK_TYPE_FIXED) throw new FormatError(`vpc footer field disk_type is ${type} in the footer at the end, with no copy at the start: a dynamic image's first sector is damaged`, 'disk_type');
  const creatorApp = ascii(bytes, FT_CREATOR_APP, 4);
  const currentSize = u64Field(view, FT_CURRENT_SIZE, 'footer', 'current_size');
  const geometry = { cylinders: view.getUint16(FT_CYLINDERS, false), heads: bytes[FT_HEADS]!, sectorsPerTrack: bytes[FT_SECTORS_PER_TRACK]! };
  const sectors = virtualSectors(creatorApp, geometry, currentSize);
  if (sectors > MAX_SECTORS) throw new FormatError(`vpc footer gives ${sectors} sectors (field ${sectors === geometry.cylinders * geometry.heads * geometry.sectorsPerTrack ? 'disk_geometry' : 'current_size'}): more than the largest VHD, ${MAX_SECTORS}`, 'current_size');
  const dataOffset = type === DISK_TYPE_DYNAMIC ? u64Field(view, FT_DATA_OFFSET, 'footer', 'data_offset') : 0;
  return { bytes: bytes.slice(0, FOOTER_BYTES), diskType: type, dataOffset, creatorApp, currentSize, geometry, virtualSize: sectors * SECTOR_BYTES };
}

/**
 * The CHS geometry of `totalSectors` by the VHD specification's algorithm
 * (allowing 255 sectors per track above 127 GiB, as QEMU); it may round
 * the size down.
 */
export function calculateGeometry(totalSectors: number): Geometry {
  const total = Math.min(totalSectors, MAX_GEOMETRY_SECTORS);
  let sectorsPerTrack: number;
  let heads: number;
  let cylindersTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylindersTimesHeads = Math.floor(total / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylindersTimesHeads = Math.floor(total / sectorsPerTrack);
    heads = Math.ceil(cylindersTimesHeads / 1024) & 0xff;
    if (heads < 4) heads = 4;
    if (cylindersTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylindersTimesHeads = Math.floor(total / sectorsPerTrack);
    }
    if (cylindersTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylindersTimesHeads = Math.floor(total / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylindersTimesHeads / heads), heads, sectorsPerTrack };
}

/**
 * The geometry and guest sectors of a new image of `bytes`: the smallest
 * geometry that holds all of it (so a conversion never truncates), or with
 * `forceSize` the largest geometry and the size as given.
 */
export function roundedImageSize(bytes: number, forceSize: boolean): { geometry: Geometry; sectors: number } {
  const chs = (g: Geometry) => g.cylinders * g.heads * g.sectorsPerTrack;
  let geometry: Geometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  if (forceSize) {
    geometry = { cylinders: MAX_CYLINDERS, heads: MAX_HEADS, sectorsPerTrack: MAX_SECTORS_PER_TRACK };
  } else {
    const wanted = Math.min(MAX_GEOMETRY_SECTORS, Math.floor(bytes / SECTOR_BYTES));
    for (let i = 0; wanted > chs(geometry); i++) geometry = calculateGeometry(wanted + i);
  }
  if (chs(geometry) !== MAX_GEOMETRY_SECTORS) return { geometry, sectors: chs(geometry) };
  const sectors = Math.floor(bytes / SECTOR_BYTES);
  if (sectors > MAX_SECTORS) throw new FormatError(`Disk size ${bytes} is too large for vpc: the largest is 2040 GiB`, 'size');
  return { geometry, sectors };
}

/** A new footer (checksum included). */
export function buildFooter(o: { diskType: number; bytes: number; geometry: Geometry; forceSize: boolean; now?: Date; uuid?: Uint8Array }): Uint8Array {
  const out = new Uint8Array(FOOTER_BYTES);
  const view = new DataView(out.buffer);
  const put = (at: number, text: string) => out.set(Array.from(text, (c) => c.charCodeAt(0)), at);
  put(FT_COOKIE, FOOTER_COOKIE);
  view.setUint32(FT_FEATURES, 0x02, false);
  view.setUint32(FT_VERSION, 0x00010000, false);
  const dataOffset = o.diskType === DISK_TYPE_DYNAMIC ? FOOTER_BYTES : -1;
  if (dataOffset < 0) {
    view.setUint32(FT_DATA_OFFSET, 0xffffffff, false);
    view.setUint32(FT_DATA_OFFSET + 4, 0xffffffff, false);
  } else {
    view.setUint32(FT_DATA_OFFSET + 4, dataOffset, false);
  }
  const seconds = Math.floor((o.now ?? new Date()).getTime() / 1000) - TIMESTAMP_BASE_SECONDS;
  view.setUint32(FT_TIMESTAMP, seconds >>> 0, false);
  put(FT_CREATOR_APP, o.forceSize ? 'qem2' : 'qemu');
  // Virtual PC 2007's version, as qemu-img writes.
  view.setUint16(FT_CREATOR_VERSION, 0x0005, false);
  view.setUint16(FT_CREATOR_VERSION + 2, 0x0003, false);
  put(FT_CREATOR_OS, 'Wi2k');
  setU64(view, FT_ORIGINAL_SIZE, o.bytes);
  setU64(view, FT_CURRENT_SIZE, o.bytes);
  view.setUint16(FT_CYLINDERS, o.geometry.cylinders, false);
  out[FT_HEADS] = o.geometry.heads;
  out[FT_SECTORS_PER_TRACK] = o.geometry.sectorsPerTrack;
  view.setUint32(FT_DISK_TYPE, o.diskType, false);
  const uuid = o.uuid ?? randomUuid();
  out.set(uuid.subarray(0, 16), FT_UUID);
  view.setUint32(FT_CHECKSUM, vpcChecksum(out, FT_CHECKSUM), false);
  return out;
}

export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 2 ** 32), false);
  view.setUint32(at + 4, value >>> 0, false);
}

/** A random version 4 UUID. */
export function randomUuid(): Uint8Array {
  const u = new Uint8Array(16);
  globalThis.crypto.getRandomValues(u);
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! & 0x3f) | 0x80;
  return u;
}
