/**
 * diskmirror compare: are two images' guest contents the same? As
 * qemu-img compare: exit 0 identical, 1 different (naming the first
 * differing 512-byte sector's offset), 2 on error. Ranges both images know
 * to read as zeroes are never read.
 */
import { parseArgs, UsageError } from './args.js';
import type { Command } from './command.js';
import { checkFormat, openImageFile } from './node-images.js';
import type { BlockStatus, ImageFormat } from '../format/image-format.js';

const CHUNK_BYTES = 4 << 20;
const SECTOR = 512;

export type CompareResult = { identical: true; sizeMismatch: boolean } | { identical: false; offset: number; sizeMismatch: boolean };

/** The first byte where `a` and `b` differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  if (Buffer.from(a.buffer, a.byteOffset, n).equals(Buffer.from(b.buffer, b.byteOffset, n))) return -1;
  // Narrow down in halves with the fast compare, then finish byte by byte.
  let lo = 0;
  let hi = n;
  while (hi - lo > 4096) {
    const mid = lo + Math.floor((hi - lo) / 2);
    const left = Buffer.from(a.buffer, a.byteOffset + lo, mid - lo).equals(Buffer.from(b.buffer, b.byteOffset + lo, mid - lo));
    if (left) lo = mid;
    else hi = mid;
  }
  for (let i = lo; i < hi; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function firstNonZero(a: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return i;
  return -1;
}

const readsZero = (s: BlockStatus) => s.kind !== 'data';

/** Compares the guest bytes of two images; past the smaller one, the larger must read as zeroes (unless strict). */
export async function compareImages(a: ImageFormat, b: ImageFormat, strict = false): Promise<CompareResult> {
  const sizeMismatch = a.size !== b.size;
  if (sizeMismatch && strict) return { identical: false, offset: Math.min(a.size, b.size), sizeMismatch };
  const common = Math.min(a.size, b.size);
  const bufA = new Uint8Array(CHUNK_BYTES);
  const bufB = new Uint8Array(CHUNK_BYTES);
  for (let offset = 0; offset < common; ) {
    const want = Math.min(CHUNK_BYTES, common - offset);
    const sa = await a.blockStatus(offset, want);
    const sb = await b.blockStatus(offset, want);
    const bytes = Math.max(1, Math.min(sa.bytes, sb.bytes, want));
    if (readsZero(sa) && readsZero(sb)) {
      offset += bytes;
      continue;
    }
    let diff = -1;
    if (readsZero(sa) || readsZero(sb)) {
      const [image, buf] = readsZero(sa) ? [b, bufB] : [a, bufA];
      await image.read(offset, buf.subarray(0, bytes));
      diff = firstNonZero(buf.subarray(0, bytes));
    } else {
      await a.read(offset, bufA.subarray(0, bytes));
      await b.read(offset, bufB.subarray(0, bytes));
      diff = firstDifference(bufA.subarray(0, bytes), bufB.subarray(0, bytes));
    }
    if (diff >= 0) return { identical: false, offset: Math.floor((offset + diff) / SECTOR) * SECTOR, sizeMismatch };
    offset += bytes;
  }
  const larger = a.size > b.size ? a : b;
  for (let offset = common; offset < larger.size; ) {
    const want = Math.min(CHUNK_BYTES, larger.size - offset);
    const s = await larger.blockStatus(offset, want);
    const bytes = Math.max(1, Math.min(s.bytes, want));
    if (s.kind === 'data') {
      await larger.read(offset, bufA.subarray(0, bytes));
      const diff = firstNonZero(bufA.subarray(0, bytes));
      if (diff >= 0) return { identical: false, offset: Math.floor((offset + diff) / SECTOR) * SECTOR, sizeMismatch };
    }
    offset += bytes;
  }
  return { identical: true, sizeMismatch };
}

export const compareCommand: Command = {
  usage: 'compare [-f FMT] [-F FMT] [-s] [-U] IMAGE1 IMAGE2',
  help: [
    'Compares the contents of two images (of any formats, backing chains followed).',
    'Exit status: 0 identical, 1 different (the first differing offset is printed), 2 error.',
    'An image larger than the other must read as zeroes past its end, unless -s (strict) is given.',
    '-U (force share) reads without taking locks, so images in use can be compared (as qemu-img -U).',
  ].join('\n'),
  errorExit: 2,
  async run(argv) {
    const { options, positionals } = parseArgs(argv, [
      { name: 'format1', short: 'f', value: true },
      { name: 'format2', short: 'F', value: true },
      { name: 'strict', short: 's' },
      { name: 'force-share', short: 'U' },
    ]);
    if (positionals.length !== 2) throw new UsageError('expected IMAGE1 and IMAGE2');
    const f1 = checkFormat(options.format1 as string | undefined);
    const f2 = checkFormat(options.format2 as string | undefined) ?? f1;
    let a: ImageFormat | undefined;
    let b: ImageFormat | undefined;
    try {
      const share = options['force-share'] ? { forceShare: true } : {};
      a = await openImageFile(positionals[0]!, { readOnly: true, ...share, ...(f1 ? { format: f1 } : {}) });
      b = await openImageFile(positionals[1]!, { readOnly: true, ...share, ...(f2 ? { format: f2 } : {}) });
      const strict = Boolean(options.strict);
      const r = await compareImages(a, b, strict);
      if (r.sizeMismatch) {
        if (strict) {
          console.log('Strict mode: Image size mismatch!');
          return 1;
        }
        console.log('Warning: Image size mismatch!');
      }
      if (r.identical) {
        console.log('Images are identical.');
        return 0;
      }
      console.log(`Content mismatch at offset ${r.offset}!`);
      return 1;
    } finally {
      await a?.close();
      await b?.close();
    }
  },
};
