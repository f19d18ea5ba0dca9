/** qemu-img's -o key=value,... creation options, for create and convert. */
import { UsageError } from './args.js';
import type { CreateImageOptions } from '../format/open.js';
import { type FormatName, FORMAT_NAMES, formatNamesText } from '../format/image-format.js';
import { parseSize } from '../util/size.js';
import { VMDK_ADAPTER_TYPES, VMDK_SUBFORMATS, type VmdkAdapterType } from '../format/vmdk/constants.js';

export type CreateFields = Omit<CreateImageOptions, 'format' | 'size'> & { size?: number };

const KEYS = [
  'compat',
  'cluster_size',
  'refcount_bits',
  'extended_l2',
  'compression_type',
  'lazy_refcounts',
  'preallocation',
  'backing_file',
  'backing_fmt',
  'size',
  'subformat',
  'force_size',
  'static',
  'block_size',
  'log_size',
  'adapter_type',
] as const;

function onOff(key: string, value: string): boolean {
  if (value === 'on' || value === 'true' || value === 'yes') return true;
  if (value === 'off' || value === 'false' || value === 'no') return false;
  throw new UsageError(`Parameter '${key}' expects 'on' or 'off', not '${value}'`);
}

/** Parses every -o given (they add up, later keys win). ",," is a literal comma, as in qemu-img. */
export function parseCreateOptions(list: string[] | undefined): CreateFields {
  const out: CreateFields = {};
  for (const text of list ?? []) {
    const parts = text.replace(/,,/g, '\0').split(',').map((p) => p.replace(/\0/g, ','));
    for (const part of parts) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      if (eq < 0) throw new UsageError(`Invalid option '${part}': expected key=value`);
      const key = part.slice(0, eq);
      const value = part.slice(eq + 1);
      if (!(KEYS as readonly string[]).includes(key)) {
        throw new UsageError(`Invalid parameter '${key}' (known: ${KEYS.join(', ')})`);
      }
      switch (key as (typeof KEYS)[number]) {
        case 'compat':
          if (value !== '0.10' && value !== '1.1' && value !== 'v2' && value !== 'v3') {
            throw new UsageError(`Invalid compat version '${value}' (expected 0.10 or 1.1)`);
          }
          out.compat = value === '0.10' || value === 'v2' ? '0.10' : '1.1';
          break;
        case 'cluster_size':
          out.clusterSize = parseSize(value, 'cluster_size');
          break;
        case 'refcount_bits': {
          const bits = Number(value);
          if (!Number.isInteger(bits)) throw new UsageError(`Parameter 'refcount_bits' expects a number, not '${value}'`);
          out.refcountBits = bits;
          break;
        }
        case 'extended_l2':
          out.extendedL2 = onOff(key, value);
          break;
        case 'compression_type':
          if (value !== 'zlib' && value !== 'zstd') throw new UsageError(`Invalid compression_type '${value}' (expected zlib or zstd)`);
          out.compressionType = value;
          break;
        case 'lazy_refcounts':
          out.lazyRefcounts = onOff(key, value);
          break;
        case 'preallocation':
          if (value !== 'off' && value !== 'metadata' && value !== 'full') {
            throw new UsageError(`Invalid preallocation mode '${value}' (expected off, metadata for qcow2, or full for raw)`);
          }
          out.preallocation = value;
          break;
        case 'backing_file':
          out.backingFile = value;
          break;
        case 'backing_fmt':
          if (!(FORMAT_NAMES as readonly string[]).includes(value)) throw new UsageError(`Unknown backing format '${value}' (expected ${formatNamesText()})`);
          out.backingFormat = value as FormatName;
          break;
        case 'size':
          out.size = parseSize(value, 'size');
          break;
        case 'subformat':
          if (value !== 'dynamic' && value !== 'fixed' && !(VMDK_SUBFORMATS as readonly string[]).includes(value)) {
            throw new UsageError(`Invalid subformat '${value}' (vpc, vhdx: dynamic or fixed; vmdk: ${VMDK_SUBFORMATS.join(' or ')})`);
          }
          out.subformat = value as CreateFields['subformat'];
          break;
        case 'adapter_type':
          if (!(VMDK_ADAPTER_TYPES as readonly string[]).includes(value)) throw new UsageError(`Invalid adapter_type '${value}' (vmdk: ${VMDK_ADAPTER_TYPES.join(', ')})`);
          out.adapterType = value as VmdkAdapterType;
          break;
        case 'force_size':
          out.forceSize = onOff(key, value);
          break;
        case 'static':
          out.static = onOff(key, value);
          break;
        case 'block_size':
          out.blockSize = parseSize(value, 'block_size');
          break;
        case 'log_size':
          out.logSize = parseSize(value, 'log_size');
          break;
      }
    }
  }
  return out;
}

/** The "Formatting ..." line qemu-img prints. */
export function describeCreate(path: string, format: string, size: number, o: CreateFields): string {
  const parts = [`Formatting '${path}', fmt=${format}`];
  if (format === 'qcow2') {
    parts.push(`cluster_size=${o.clusterSize ?? 65536}`);
    if (o.compat) parts.push(`compat=${o.compat}`);
    parts.push(`extended_l2=${o.extendedL2 ? 'on' : 'off'}`);
    if (o.preallocation) parts.push(`preallocation=${o.preallocation}`);
    parts.push(`compression_type=${o.compressionType ?? 'zlib'}`);
  }
  parts.push(`size=${size}`);
  if (o.backingFile !== undefined) parts.push(`backing_file=${o.backingFile}`);
  if (o.backingFormat !== undefined) parts.push(`backing_fmt=${o.backingFormat}`);
  if (format === 'qcow2') {
    parts.push(`lazy_refcounts=${o.lazyRefcounts ? 'on' : 'off'}`);
    parts.push(`refcount_bits=${o.refcountBits ?? 16}`);
  } else if (format === 'vpc') {
    if (o.subformat) parts.push(`subformat=${o.subformat}`);
    if (o.forceSize !== undefined) parts.push(`force_size=${o.forceSize ? 'on' : 'off'}`);
  } else if (format === 'vhdx') {
    parts.push(`log_size=${o.logSize ?? 1048576}`, `block_size=${o.blockSize ?? 0}`);
    if (o.subformat) parts.push(`subformat=${o.subformat}`);
  } else if (format === 'vdi') {
    if (o.static !== undefined) parts.push(`static=${o.static ? 'on' : 'off'}`);
  } else if (format === 'vmdk') {
    if (o.adapterType) parts.push(`adapter_type=${o.adapterType}`);
    if (o.subformat) parts.push(`subformat=${o.subformat}`);
  } else if (o.preallocation) {
    parts.push(`preallocation=${o.preallocation}`);
  }
  return parts.join(' ');
}
