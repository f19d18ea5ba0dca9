/**
 * One seeded change of a region of an image, for the hostile-input tests:
 * a byte set at random, a 32-bit word set to all ones, to zero or to one
 * of `values`, or a word nudged by one, in the format's byte order.
 */
import { randInt } from './random.js';

export interface MutationOptions {
  littleEndian: boolean;
  /** Edge values a word may be set to. */
  values: readonly number[];
}

/** Changes `file` in [offset, offset + bytes) and says what it did. */
export function mutateRegion(file: Uint8Array, region: { offset: number; bytes: number }, next: () => number, options: MutationOptions): string {
  const le = options.littleEndian;
  const word = region.offset + 4 * randInt(next, Math.max(1, Math.floor(region.bytes / 4)));
  const view = new DataView(file.buffer, file.byteOffset, file.length);
  switch (randInt(next, 5)) {
    case 0: {
      const at = region.offset + randInt(next, region.bytes);
      file[at] = randInt(next, 256);
      return `byte ${at}`;
    }
    case 1:
      view.setUint32(word, 0xffffffff, le);
      return `word ${word} = 0xffffffff`;
    case 2:
      view.setUint32(word, 0, le);
      return `word ${word} = 0`;
    case 3: {
      const value = options.values[randInt(next, options.values.length)]!;
      view.setUint32(word, value, le);
      return `word ${word} = 0x${value.toString(16)}`;
    }
    default: {
      const delta = randInt(next, 2) === 0 ? 1 : -1;
      view.setUint32(word, (view.getUint32(word, le) + delta) >>> 0, le);
      return `word ${word} ${delta > 0 ? '+1' : '-1'}`;
    }
  }
}
