/**
 * diskmirror info: what qemu-img info says, in its words.
 *
 * JSON carries qemu-img 7.2's keys, in its order, with its values where
 * diskmirror can know them: `actual-size` is the file's allocated blocks,
 * a raw image's virtual size is whole 512-byte sectors (QEMU's block layer
 * counts sectors), a backing file's full name is joined to the directory of
 * the image that names it as QEMU joins it (without normalizing). With
 * --backing-chain, JSON is an array: one object per image, top first;
 * without it, the top image's object alone. Human output prints qemu-img's
 * lines, then (without --backing-chain) one more that names the chain.
 */
import { statSync } from 'node:fs';
import type { Command } from './command.js';
import { openForReading, parseSingleImage } from './node-images.js';
import type { ImageInfo } from '../format/image-format.js';
import type { ExtentInfo } from '../format/vmdk/image.js';

export interface QemuImageInfo {
  'backing-filename-format'?: string;
  snapshots?: Array<Record<string, unknown>>;
  'virtual-size': number;
  filename: string;
  'cluster-size'?: number;
  format: string;
  'actual-size'?: number;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  'full-backing-filename'?: string;
  'backing-filename'?: string;
  'dirty-flag': boolean;
}

/** The order qemu-img 7.2 prints an image's keys in (seen: raw, qcow2 v2 and v3, overlays, snapshots). */
const KEY_ORDER: readonly (keyof QemuImageInfo)[] = [
  'backing-filename-format',
  'snapshots',
  'virtual-size',
  'filename',
  'cluster-size',
  'format',
  'actual-size',
  'format-specific',
  'full-backing-filename',
  'backing-filename',
  'dirty-flag',
];

/** Bytes the file takes on disk (its allocated blocks), as qemu-img's "disk size". */
function actualSize(path: string): number | undefined {
  try {
    const st = statSync(path);
    return st.blocks !== undefined ? st.blocks * 512 : st.size;
  } catch {
    return undefined;
  }
}

/**
 * A backing file name as QEMU joins it to the image that names it: an
 * absolute name as it is; otherwise what precedes the last '/' of the
 * image's name (nothing if it has none), then the name.
 */
export function joinBackingName(imageName: string, backing: string): string {
  if (backing.startsWith('/')) return backing;
  const slash = imageName.lastIndexOf('/');
  return slash < 0 ? backing : imageName.slice(0, slash + 1) + backing;
}

/** One image's object, keys in qemu-img's order. */
export function imageInfo(filename: string, info: ImageInfo): QemuImageInfo {
  const virtualSize = info.format === 'raw' ? Math.ceil(info.virtualSize / 512) * 512 : info.virtualSize;
  const out: QemuImageInfo = { 'virtual-size': virtualSize, filename, format: info.format, 'dirty-flag': false };
  if (info.clusterSize) out['cluster-size'] = info.clusterSize;
  let actual = actualSize(filename);
  // A vmdk's extent files count too, as qemu-img counts them.
  if (info.format === 'vmdk' && actual !== undefined) {
    for (const e of (info.details?.extents ?? []) as ExtentInfo[]) if (e.fileName !== null) actual += actualSize(joinBackingName(filename, e.fileName)) ?? 0;
  }
  if (actual !== undefined) out['actual-size'] = actual;
  if (info.backingFile !== undefined) {
    out['backing-filename'] = info.backingFile;
    out['full-backing-filename'] = joinBackingName(filename, info.backingFile);
    if (info.backingFormat) out['backing-filename-format'] = info.backingFormat;
  }
  if (info.format === 'qcow2' && info.details) {
    const d = info.details;
    out['dirty-flag'] = Boolean(d.dirty);
    // compat 0.10 has no feature bits: qemu-img leaves those keys out.
    const data: Record<string, unknown> =
      info.compat === '0.10'
        ? { compat: info.compat, 'compression-type': d.compressionType, 'refcount-bits': d.refcountBits }
        : {
            compat: info.compat,
            'compression-type': d.compressionType,
            'lazy-refcounts': d.lazyRefcounts,
            'refcount-bits': d.refcountBits,
            corrupt: d.corrupt,
            'extended-l2': d.extendedL2,
          };
    out['format-specific'] = { type: 'qcow2', data };
    const snapshots = d.snapshots as Array<{ id: string; name: string; vmStateBytes: number; dateSeconds: number }> | undefined;
    if (snapshots && snapshots.length > 0) {
      // The keys diskmirror reads, in qemu-img's order (it also has icount, the VM clock and date-nsec).
      out.snapshots = snapshots.map((s) => ({ name: s.name, 'date-sec': s.dateSeconds, id: s.id, 'vm-state-size': s.vmStateBytes }));
    }
  }
  if (info.format === 'vmdk' && info.details) out['format-specific'] = { type: 'vmdk', data: vmdkSpecific(filename, info.details) };
  return ordered(out);
}

/** qemu-img's format-specific data of a vmdk: the CIDs, the create type, each extent (its file named as QEMU joins it to the descriptor's). */
function vmdkSpecific(filename: string, d: Record<string, unknown>): Record<string, unknown> {
  const extents = (d.extents as ExtentInfo[]).map((e) => ({
    ...(e.compressed ? { compressed: true } : {}),
    'virtual-size': e.virtualSize,
    filename: e.fileName === null ? filename : joinBackingName(filename, e.fileName),
    ...(e.clusterSize !== undefined ? { 'cluster-size': e.clusterSize } : {}),
    format: e.type,
  }));
  return { cid: d.cid, 'parent-cid': d.parentCid, 'create-type': d.createType, extents };
}

/** Format-specific data as qemu-img prints it: "key name: value", lists as "[i]:" with their items indented below. */
function humanLines(data: Record<string, unknown>, indent: string, names: Record<string, string>): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const name = names[key] ?? key.replace(/-/g, ' ');
    if (Array.isArray(value)) {
      lines.push(`${indent}${name}:`);
      value.forEach((item, i) => {
        lines.push(`${indent}    [${i}]:`);
        lines.push(...humanLines(item as Record<string, unknown>, `${indent}        `, names));
      });
    } else {
      lines.push(`${indent}${name}: ${String(value)}`);
    }
  }
  return lines;
}

function ordered(info: QemuImageInfo): QemuImageInfo {
  const out: Record<string, unknown> = {};
  for (const key of KEY_ORDER) if (info[key] !== undefined) out[key] = info[key];
  return out as unknown as QemuImageInfo;
}

/** The chain's objects, top first; each backing image is named as its parent's full backing file name. */
export function chainInfo(path: string, info: ImageInfo): QemuImageInfo[] {
  const out: QemuImageInfo[] = [];
  let filename = path;
  for (let i: ImageInfo | undefined = info; i; i = i.backing) {
    const one = imageInfo(filename, i);
    out.push(one);
    if (!one['full-backing-filename']) break;
    filename = one['full-backing-filename'];
  }
  return out;
}

/** A size as qemu-img prints it: three significant digits, units of 1024 from 1000 on ("977 KiB", "1 MiB", "0 B"). */
export function qemuSize(bytes: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  let i = 0;
  while (i < suffixes.length - 1 && bytes / 2 ** (10 * i) >= 1000) i++;
  return `${formatG3(bytes / 2 ** (10 * i))} ${suffixes[i]}B`;
}

/** printf's %0.3g for a value >= 0. */
function formatG3(value: number): string {
  if (value === 0) return '0';
  const rounded = Number(value.toPrecision(3));
  const exponent = Math.floor(Math.log10(rounded));
  const strip = (s: string) => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  if (exponent < -4 || exponent >= 3) {
    const mantissa = strip((rounded / 10 ** exponent).toFixed(2));
    return `${mantissa}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  return strip(rounded.toFixed(Math.max(0, 2 - exponent)));
}

function human(info: QemuImageInfo): string {
  const lines = [`image: ${info.filename}`, `file format: ${info.format}`, `virtual size: ${qemuSize(info['virtual-size'])} (${info['virtual-size']} bytes)`];
  if (info['actual-size'] !== undefined) lines.push(`disk size: ${qemuSize(info['actual-size'])}`);
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['dirty-flag']) lines.push('cleanly shut down: no');
  if (info['backing-filename'] !== undefined) {
    const full = info['full-backing-filename'];
    lines.push(`backing file: ${info['backing-filename']}${full !== undefined && full !== info['backing-filename'] ? ` (actual path: ${full})` : ''}`);
  }
  if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  if (info.snapshots) {
    lines.push('Snapshot list:');
    lines.push('ID        TAG               VM SIZE');
    for (const s of info.snapshots) lines.push(`${String(s.id).padEnd(10)}${String(s.name).padEnd(18)}${qemuSize(Number(s['vm-state-size'])).padStart(7)}`);
  }
  if (info['format-specific']) {
    const d = info['format-specific'].data;
    const names: Record<string, string> = {
      compat: 'compat',
      'compression-type': 'compression type',
      'lazy-refcounts': 'lazy refcounts',
      'refcount-bits': 'refcount bits',
      corrupt: 'corrupt',
      'extended-l2': 'extended l2',
    };
    lines.push('Format specific information:');
    lines.push(...humanLines(d, '    ', names));
  }
  return lines.join('\n');
}

export const infoCommand: Command = {
  usage: 'info [-f FMT] [--output=human|json] [--backing-chain] [-U] IMAGE',
  help: [
    'Shows the format, virtual size, disk size, cluster size, compat level and backing chain of IMAGE, as qemu-img info.',
    'With --backing-chain, every image of the chain, top first (JSON: an array).',
    '-U (force share) reads without taking locks, so an image in use can be looked at (as qemu-img -U).',
  ].join('\n'),
  errorExit: 1,
  async run(argv) {
    const args = parseSingleImage(argv, [{ name: 'backing-chain' }]);
    const { path, output, options } = args;
    const image = await openForReading(args);
    try {
      const info = await image.info();
      if (options['backing-chain']) {
        const chain = chainInfo(path, info);
        console.log(output === 'json' ? JSON.stringify(chain, null, 4) : chain.map(human).join('\n\n'));
      } else if (output === 'json') {
        console.log(JSON.stringify(imageInfo(path, info), null, 4));
      } else {
        const chain = chainInfo(path, info);
        const lines = [human(chain[0]!)];
        if (chain.length > 1) lines.push(`backing chain: ${chain.map((i) => `${i.filename} (${i.format})`).join(' -> ')}`);
        console.log(lines.join('\n'));
      }
      return 0;
    } finally {
      await image.close();
    }
  },
};
