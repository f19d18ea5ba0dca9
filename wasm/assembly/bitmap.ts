/*
 * A hierarchical dirty bitmap, in the spirit of QEMU's util/hbitmap.c.
 *
 * The bottom level (level 0) has one bit per chunk: bit i is set when chunk i
 * is dirty. Every level above it has one bit per 64-bit word of the level
 * below: the bit is set exactly when that word is non-zero. Levels are added
 * until one holds a single word, so a bitmap of n chunks has
 * ceil(log64(n)) + 1 levels (at least one).
 *
 * Worked example: 10,000 chunks.
 *
 *   level 0: ceil(10000 / 64) = 157 words  (bit i    = chunk i dirty)
 *   level 1: ceil(157 / 64)   =   3 words  (bit j    = level-0 word j != 0)
 *   level 2: ceil(3 / 64)     =   1 word   (bit k    = level-1 word k != 0)
 *
 *   Mark chunks 4100..4102 dirty: level-0 word 64 (4100 >> 6) gets bits
 *   4..6; level-1 word 1 (64 >> 6) gets bit 0 (64 & 63); level-2 word 0
 *   gets bit 1. To find the next dirty chunk from 0, look at level-0 word 0:
 *   empty, so climb to level 1 and ask for the first bit from 1 (word 0 + 1):
 *   word 0 of level 1 holds none; climb to level 2, first bit from 1: bit 1.
 *   Descend: level-1 word 1 has lowest bit 0, so level-0 word 64 is the one;
 *   its lowest bit is 4, so the answer is 64 * 64 + 4 = 4100. Each step looks
 *   at one word per level, so a search costs O(log64 n) whatever the gaps.
 *
 * Setting a range sets bits on level 0 and the matching word range on each
 * level above (every touched word is now non-zero). Resetting a range clears
 * bits on level 0; of the touched words, those now zero are cleared from the
 * level above, and so on up. Both stop climbing as soon as a level did not
 * change. The count of dirty chunks is kept on the side, so it is O(1).
 *
 * A bitmap lives in linear memory: a header, then one array of u64 words per
 * level. Chunk positions cross the JS boundary as f64 (exact up to 2^53);
 * inside they are u64. Bits past the last chunk are always zero.
 */

// Header layout (bytes).
const H_NB_CHUNKS: usize = 0; // u64
const H_COUNT: usize = 8; // u64
const H_NB_LEVELS: usize = 16; // u32
const H_LEVELS: usize = 24; // MAX_LEVELS x { ptr: u64, words: u64 }
const MAX_LEVELS: u32 = 8;
const HEADER_BYTES: usize = H_LEVELS + (<usize>MAX_LEVELS << 4);

/** The largest bitmap: 2^33 - 2^23 chunks (its bottom level, 1 GiB less 1 MiB, is one heap block). */
export const MAX_CHUNKS: f64 = 8581545984.0;

const ALL: u64 = 0xffffffffffffffff;

// @ts-ignore: decorator
@inline function nbChunksOf(h: usize): u64 {
  return load<u64>(h + H_NB_CHUNKS);
}
// @ts-ignore: decorator
@inline function levelPtr(h: usize, level: u32): usize {
  return <usize>load<u64>(h + H_LEVELS + (<usize>level << 4));
}
// @ts-ignore: decorator
@inline function levelWords(h: usize, level: u32): u64 {
  return load<u64>(h + H_LEVELS + (<usize>level << 4) + 8);
}
// @ts-ignore: decorator
@inline function nbLevelsOf(h: usize): u32 {
  return load<u32>(h + H_NB_LEVELS);
}
// @ts-ignore: decorator
@inline function wordAt(base: usize, index: u64): u64 {
  return load<u64>(base + (<usize>index << 3));
}

/**
 * `bytes` of zeroes from the heap, touching only memory that may hold
 * something. Memory the allocator had to grow for this block is fresh from
 * memory.grow, already zero and not yet backed by the host's pages: writing
 * zeroes there would commit it all (an 8 TiB job's bitmaps are 16 MiB each,
 * nearly all of it never set). Below the old end the block may be reused
 * memory and is cleared; the allocator's own links live in a free block's
 * first and last words, so those are cleared wherever the block lies.
 */
function allocZeroed(bytes: usize): usize {
  const oldEnd = <usize>memory.size() << 16;
  const ptr = heap.alloc(bytes);
  const end = ptr + bytes;
  if (end <= oldEnd) {
    memory.fill(ptr, 0, bytes);
  } else {
    if (ptr < oldEnd) memory.fill(ptr, 0, oldEnd - ptr);
    const edge: usize = bytes < 16 ? bytes : 16;
    memory.fill(ptr, 0, edge);
    memory.fill(end - edge, 0, edge);
  }
  return ptr;
}

/** Creates a bitmap of `nbChunks` clean chunks; 0 when the size is invalid. */
export function bitmapNew(nbChunksF: f64): usize {
  if (!(nbChunksF >= 0) || nbChunksF > MAX_CHUNKS || nbChunksF != Math.floor(nbChunksF)) return 0;
  const nbChunks = <u64>nbChunksF;
  const h = heap.alloc(HEADER_BYTES);
  memory.fill(h, 0, HEADER_BYTES);
  store<u64>(h + H_NB_CHUNKS, nbChunks);
  let words: u64 = (nbChunks + 63) >> 6;
  if (words == 0) words = 1;
  let level: u32 = 0;
  while (true) {
    const bytes = <usize>(words << 3);
    const ptr = allocZeroed(bytes);
    store<u64>(h + H_LEVELS + (<usize>level << 4), <u64>ptr);
    store<u64>(h + H_LEVELS + (<usize>level << 4) + 8, words);
    level++;
    if (words == 1) break;
    words = (words + 63) >> 6;
  }
  store<u32>(h + H_NB_LEVELS, level);
  return h;
}

export function bitmapFree(h: usize): void {
  const levels = nbLevelsOf(h);
  for (let l: u32 = 0; l < levels; l++) heap.free(levelPtr(h, l));
  heap.free(h);
}

export function bitmapSize(h: usize): f64 {
  return <f64>nbChunksOf(h);
}

export function bitmapCount(h: usize): f64 {
  return <f64>load<u64>(h + H_COUNT);
}

export function bitmapLevels(h: usize): u32 {
  return nbLevelsOf(h);
}

export function bitmapGet(h: usize, chunkF: f64): bool {
  const chunk = <u64>chunkF;
  if (chunkF < 0 || chunk >= nbChunksOf(h)) return false;
  return ((wordAt(levelPtr(h, 0), chunk >> 6) >> (chunk & 63)) & 1) != 0;
}

/** The bits of word `w` that fall in bits a..b (inclusive). */
// @ts-ignore: decorator
@inline function wordMask(w: u64, a: u64, b: u64): u64 {
  let mask = ALL;
  if (w == a >> 6) mask &= ALL << (a & 63);
  if (w == b >> 6) mask &= ALL >> (63 - (b & 63));
  return mask;
}

/** Sets bits a..b (inclusive) of one level; returns how many were newly set. */
function setBits(base: usize, a: u64, b: u64): u64 {
  const wa = a >> 6;
  const wb = b >> 6;
  let added: u64 = 0;
  for (let w = wa; w <= wb; w++) {
    const mask = wordMask(w, a, b);
    const p = base + (<usize>w << 3);
    const old = load<u64>(p);
    added += popcnt<u64>(~old & mask);
    store<u64>(p, old | mask);
  }
  return added;
}

/** Clears bits a..b (inclusive) of one level; returns how many were cleared. */
function clearBits(base: usize, a: u64, b: u64): u64 {
  const wa = a >> 6;
  const wb = b >> 6;
  let removed: u64 = 0;
  for (let w = wa; w <= wb; w++) {
    const mask = wordMask(w, a, b);
    const p = base + (<usize>w << 3);
    const old = load<u64>(p);
    removed += popcnt<u64>(old & mask);
    store<u64>(p, old & ~mask);
  }
  return removed;
}

/** Clamps [start, start + len) to the bitmap; returns false when empty. */
let rangeFirst: u64 = 0;
let rangeLast: u64 = 0;
function clampRange(h: usize, startF: f64, lenF: f64): bool {
  if (!(lenF > 0) || !(startF >= 0)) return false;
  const n = nbChunksOf(h);
  const start = <u64>startF;
  if (start >= n) return false;
  const endF = startF + lenF;
  const end: u64 = endF >= <f64>n ? n : <u64>endF;
  if (end <= start) return false;
  rangeFirst = start;
  rangeLast = end - 1;
  return true;
}

export function bitmapSet(h: usize, startF: f64, lenF: f64): void {
  if (!clampRange(h, startF, lenF)) return;
  let a = rangeFirst;
  let b = rangeLast;
  const added = setBits(levelPtr(h, 0), a, b);
  store<u64>(h + H_COUNT, load<u64>(h + H_COUNT) + added);
  if (added == 0) return; // every word in range was already non-zero
  const levels = nbLevelsOf(h);
  for (let l: u32 = 1; l < levels; l++) {
    a >>= 6;
    b >>= 6;
    if (setBits(levelPtr(h, l), a, b) == 0) break;
  }
}

export function bitmapReset(h: usize, startF: f64, lenF: f64): void {
  if (!clampRange(h, startF, lenF)) return;
  let a = rangeFirst;
  let b = rangeLast;
  const removed = clearBits(levelPtr(h, 0), a, b);
  store<u64>(h + H_COUNT, load<u64>(h + H_COUNT) - removed);
  if (removed == 0) return;
  const levels = nbLevelsOf(h);
  for (let l: u32 = 0; l + 1 < levels; l++) {
    // Words a>>6 .. b>>6 of level l were touched; inner ones are now zero,
    // the two edge words may still hold bits outside the range.
    const base = levelPtr(h, l);
    const wa = a >> 6;
    const wb = b >> 6;
    const lo: u64 = wordAt(base, wa) == 0 ? wa : wa + 1;
    let hi: i64 = wordAt(base, wb) == 0 ? <i64>wb : <i64>wb - 1;
    if (hi < 0 || <u64>hi < lo) break;
    if (clearBits(levelPtr(h, l + 1), lo, <u64>hi) == 0) break;
    a = lo;
    b = <u64>hi;
  }
}

/** First dirty chunk at or after `from`, or -1. */
export function bitmapNextDirty(h: usize, fromF: f64): f64 {
  if (!(fromF >= 0)) fromF = 0;
  const n = nbChunksOf(h);
  if (fromF >= <f64>n) return -1;
  return <f64>nextDirty(h, <u64>fromF);
}

function nextDirty(h: usize, from: u64): i64 {
  const levels = nbLevelsOf(h);
  let level: u32 = 0;
  let pos = from; // a bit index on `level`
  while (true) {
    const base = levelPtr(h, level);
    const w = pos >> 6;
    if (w >= levelWords(h, level)) return -1;
    const word = wordAt(base, w) & (ALL << (pos & 63));
    if (word != 0) {
      pos = (w << 6) | ctz<u64>(word);
      while (level > 0) {
        level--;
        pos = (pos << 6) | ctz<u64>(wordAt(levelPtr(h, level), pos));
      }
      return <i64>pos;
    }
    level++;
    if (level >= levels) return -1;
    pos = w + 1; // the next word of the level below, as a bit on this level
  }
}

/** First clean chunk in [from, limit), or -1 when all of it is dirty. */
function nextClean(h: usize, from: u64, limit: u64): i64 {
  const n = nbChunksOf(h);
  if (limit > n) limit = n;
  if (from >= limit) return -1;
  const base = levelPtr(h, 0);
  let w = from >> 6;
  let word = ~wordAt(base, w) & (ALL << (from & 63));
  const lastWord = (limit - 1) >> 6;
  while (true) {
    if (word != 0) {
      const pos = (w << 6) | ctz<u64>(word);
      return pos < limit ? <i64>pos : -1;
    }
    w++;
    if (w > lastWord) return -1;
    word = ~wordAt(base, w);
  }
}

export function bitmapNextClean(h: usize, fromF: f64): f64 {
  if (!(fromF >= 0)) fromF = 0;
  const n = nbChunksOf(h);
  if (fromF >= <f64>n) return -1;
  return <f64>nextClean(h, <u64>fromF, n);
}

let runLength: f64 = 0;

/**
 * The next dirty run: its first chunk at or after `from` (or -1), and its
 * length, at most `maxLen`, read with bitmapRunLength().
 */
export function bitmapNextDirtyRun(h: usize, fromF: f64, maxLenF: f64): f64 {
  runLength = 0;
  const start = bitmapNextDirty(h, fromF);
  if (start < 0 || !(maxLenF >= 1)) return -1;
  const s = <u64>start;
  const maxLen = <u64>maxLenF;
  const limit: u64 = maxLen > nbChunksOf(h) - s ? nbChunksOf(h) : s + maxLen;
  const clean = nextClean(h, s, limit);
  const end: u64 = clean < 0 ? limit : <u64>clean;
  runLength = <f64>(end - s);
  return start;
}

export function bitmapRunLength(): f64 {
  return runLength;
}

/** Dirty chunks in [start, start + len). */
export function bitmapCountRange(h: usize, startF: f64, lenF: f64): f64 {
  if (!clampRange(h, startF, lenF)) return 0;
  const a = rangeFirst;
  const b = rangeLast;
  const base = levelPtr(h, 0);
  const wa = a >> 6;
  const wb = b >> 6;
  let total: u64 = 0;
  for (let w = wa; w <= wb; w++) {
    const mask = wordMask(w, a, b);
    total += popcnt<u64>(wordAt(base, w) & mask);
  }
  return <f64>total;
}

/** Where level 0 lives: serialize by copying these bytes out. */
export function bitmapWordsPtr(h: usize): usize {
  return levelPtr(h, 0);
}

export function bitmapWords(h: usize): f64 {
  return <f64>levelWords(h, 0);
}

/**
 * Rebuilds the count and the upper levels from level 0, after its words were
 * written from outside (deserialize). Bits past the last chunk are dropped.
 */
export function bitmapRebuild(h: usize): void {
  const n = nbChunksOf(h);
  const base = levelPtr(h, 0);
  const words = levelWords(h, 0);
  const tail = n & 63;
  if (tail != 0) {
    const p = base + (<usize>(words - 1) << 3);
    store<u64>(p, load<u64>(p) & ~(ALL << tail));
  } else if (n == 0) {
    store<u64>(base, 0);
  }
  let count: u64 = 0;
  for (let w: u64 = 0; w < words; w++) count += popcnt<u64>(wordAt(base, w));
  store<u64>(h + H_COUNT, count);
  const levels = nbLevelsOf(h);
  for (let l: u32 = 1; l < levels; l++) {
    const below = levelPtr(h, l - 1);
    const belowWords = levelWords(h, l - 1);
    const here = levelPtr(h, l);
    const hereWords = levelWords(h, l);
    for (let w: u64 = 0; w < hereWords; w++) {
      let word: u64 = 0;
      const first = w << 6;
      const last = first + 64 < belowWords ? first + 64 : belowWords;
      for (let j = first; j < last; j++) {
        if (wordAt(below, j) != 0) word |= (<u64>1) << (j - first);
      }
      store<u64>(here + (<usize>w << 3), word);
    }
  }
}

/** dst |= src; both must have the same size. Returns false otherwise. */
export function bitmapMerge(dst: usize, src: usize): bool {
  if (nbChunksOf(dst) != nbChunksOf(src)) return false;
  const d = levelPtr(dst, 0);
  const s = levelPtr(src, 0);
  const words = levelWords(dst, 0);
  // Walk only the non-zero words of src, found through its level 1.
  let w = nextDirtyWord(src, 0);
  while (w >= 0) {
    const p = d + (<usize>w << 3);
    store<u64>(p, load<u64>(p) | wordAt(s, <u64>w));
    if (<u64>w + 1 >= words) break;
    w = nextDirtyWord(src, <u64>w + 1);
  }
  bitmapRebuild(dst);
  return true;
}

/** Index of the first non-zero level-0 word at or after `from`, or -1. */
function nextDirtyWord(h: usize, from: u64): i64 {
  const n = nbChunksOf(h);
  const firstBit = from << 6;
  if (firstBit >= n) return -1;
  const chunk = nextDirty(h, firstBit);
  return chunk < 0 ? -1 : chunk >> 6;
}

export function bitmapClear(h: usize): void {
  const levels = nbLevelsOf(h);
  for (let l: u32 = 0; l < levels; l++) {
    memory.fill(levelPtr(h, l), 0, <usize>(levelWords(h, l) << 3));
  }
  store<u64>(h + H_COUNT, 0);
}
