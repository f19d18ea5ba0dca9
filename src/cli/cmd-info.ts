/**
 * diskmirror info: what qemu-img info says (format, virtual size, disk
 * size, cluster size, backing file, qcow2 specifics), plus the backing
 * chain. JSON uses qemu-img's keys; each backing image nests under
 * "backing-image".
 */
import { statSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import type { Command } from './commands.js';
import { openForReading, parseSingleImage } from './node-images.js';
import type { ImageInfo } from '../format/image-format.js';
import { formatSize } from '../util/size.js';

export interface QemuImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'dirty-flag'?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: { type: string; data: Record<string, unknown> };
  snapshots?: Array<Record<string, unknown>>;
  'backing-image'?: QemuImageInfo;
}

/** Bytes the file takes on disk (its allocated blocks), as qemu-img's "disk size". */
function actualSize(path: string): number | undefined {
  try {
    const st = statSync(path);
    return st.blocks !== undefined ? st.blocks * 512 : st.size;
  } catch {
    return undefined;
  }
}

export function toQemuInfo(path: string, info: ImageInfo): QemuImageInfo {
  const out: QemuImageInfo = { filename: path, format: info.format, 'virtual-size': info.virtualSize };
  const actual = actualSize(path);
  if (actual !== undefined) out['actual-size'] = actual;
  if (info.clusterSize) out['cluster-size'] = info.clusterSize;
  if (info.format === 'qcow2') out['dirty-flag'] = Boolean(info.details?.dirty);
  if (info.backingFile !== undefined) {
    out['backing-filename'] = info.backingFile;
    out['full-backing-filename'] = isAbsolute(info.backingFile) ? info.backingFile : resolvePath(dirname(path), info.backingFile);
    if (info.backingFormat) out['backing-filename-format'] = info.backingFormat;
  }
  if (info.format === 'qcow2' && info.details) {
    const d = info.details;
    out['format-specific'] = {
      type: 'qcow2',
      data: {
        compat: info.compat,
        'compression-type': d.compressionType,
        'lazy-refcounts': d.lazyRefcounts,
        'refcount-bits': d.refcountBits,
        corrupt: d.corrupt,
        'extended-l2': d.extendedL2,
      },
    };
    const snapshots = d.snapshots as Array<{ id: string; name: string; vmStateBytes: number; dateSeconds: number }> | undefined;
    if (snapshots && snapshots.length > 0) {
      out.snapshots = snapshots.map((s) => ({ id: s.id, name: s.name, 'vm-state-size': s.vmStateBytes, 'date-sec': s.dateSeconds }));
    }
  }
  if (info.backing && out['full-backing-filename']) out['backing-image'] = toQemuInfo(out['full-backing-filename'], info.backing);
  return out;
}

function human(info: QemuImageInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
  ];
  if (info['actual-size'] !== undefined) lines.push(`disk size: ${formatSize(info['actual-size'])}`);
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['backing-filename'] !== undefined) {
    const full = info['full-backing-filename'];
    lines.push(`backing file: ${info['backing-filename']}${full && full !== info['backing-filename'] ? ` (actual path: ${full})` : ''}`);
  }
  if (info['backing-filename-format']) lines.push(`backing file format: ${info['backing-filename-format']}`);
  if (info.snapshots) {
    lines.push('Snapshot list:');
    lines.push('ID        TAG               VM SIZE');
    for (const s of info.snapshots) lines.push(`${String(s.id).padEnd(10)}${String(s.name).padEnd(18)}${formatSize(Number(s['vm-state-size']))}`);
  }
  if (info['format-specific']) {
    const d = info['format-specific'].data;
    lines.push('Format specific information:');
    lines.push(`    compat: ${d.compat}`);
    lines.push(`    compression type: ${d['compression-type']}`);
    lines.push(`    lazy refcounts: ${d['lazy-refcounts']}`);
    lines.push(`    refcount bits: ${d['refcount-bits']}`);
    lines.push(`    corrupt: ${d.corrupt}`);
    lines.push(`    extended l2: ${d['extended-l2']}`);
  }
  if (info['dirty-flag']) lines.push('dirty: the image was not closed cleanly (lazy refcounts); a writable open repairs it');
  const chain: string[] = [];
  for (let b = info['backing-image']; b; b = b['backing-image']) chain.push(`${b.filename} (${b.format})`);
  if (chain.length > 0) lines.push(`backing chain: ${[`${info.filename} (${info.format})`, ...chain].join(' -> ')}`);
  return lines.join('\n');
}

export const infoCommand: Command = {
  usage: 'info [-f FMT] [--output=human|json] [--backing-chain] IMAGE',
  help: [
    'Shows the format, virtual size, disk size, cluster size, compat level and backing chain of IMAGE.',
    'With --backing-chain, human output also describes every image of the chain.',
  ].join('\n'),
  errorExit: 1,
  async run(argv) {
    const args = parseSingleImage(argv, [{ name: 'backing-chain' }]);
    const { path, output, options } = args;
    const image = await openForReading(args);
    try {
      const info = toQemuInfo(path, await image.info());
      if (output === 'json') {
        console.log(JSON.stringify(info, null, 4));
      } else if (options['backing-chain']) {
        const parts: string[] = [];
        for (let i: QemuImageInfo | undefined = info; i; i = i['backing-image']) parts.push(human({ ...i, 'backing-image': undefined } as QemuImageInfo));
        console.log(parts.join('\n\n'));
      } else {
        console.log(human(info));
      }
      return 0;
    } finally {
      await image.close();
    }
  },
};
