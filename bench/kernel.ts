/**
 * Kernel benchmark: zero detection in wasm (v128) against the fastest plain
 * JavaScript loops, measured in the same run over the same buffer, and the
 * bitmap's next-dirty search over a sparse 2^24-chunk bitmap.
 *
 *   npm run bench:kernel
 */
import { Kernel } from '../src/kernel/kernel.js';

const BUFFER_BYTES = 1 << 20; // one 1 MiB I/O buffer, all zero: the worst case (no early exit)
const MIN_SECONDS = 0.4;

function measure(name: string, bytesPerCall: number, fn: () => boolean): number {
  for (let i = 0; i < 20; i++) fn(); // warm up, let the JIT settle
  let calls = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < MIN_SECONDS * 1000) {
    for (let i = 0; i < 20; i++) if (!fn()) throw new Error(`${name} saw data in a zero buffer`);
    calls += 20;
    elapsed = performance.now() - start;
  }
  const gbPerSecond = (bytesPerCall * calls) / (elapsed / 1000) / 1e9;
  console.log(`  ${name.padEnd(34)} ${gbPerSecond.toFixed(2).padStart(7)} GB/s`);
  return gbPerSecond;
}

function jsBytes(a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

function jsWords(a: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

function jsWordsUnrolled(a: Uint32Array): boolean {
  const n = a.length & ~7;
  let i = 0;
  for (; i < n; i += 8) {
    if ((a[i]! | a[i + 1]! | a[i + 2]! | a[i + 3]! | a[i + 4]! | a[i + 5]! | a[i + 6]! | a[i + 7]!) !== 0) return false;
  }
  for (; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

function jsFloat64Words(a: Float64Array): boolean {
  // Compares bit patterns as doubles: +0 is the only double equal to 0
  // whose bits are all zero, except -0, which we rule out with Object.is.
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    if (v !== 0 || Object.is(v, -0)) return false;
  }
  return true;
}

async function main(): Promise<void> {
  const kernel = await Kernel.create();
  const pool = kernel.newPool(BUFFER_BYTES, 1);
  const buf = pool.take()!;
  pool.view(buf).fill(0);

  console.log(`zero detection over a ${BUFFER_BYTES >> 10} KiB zero buffer:`);
  const wasm = measure('wasm v128 (kernel isZero)', BUFFER_BYTES, () => kernel.isZero(buf.ptr, BUFFER_BYTES));
  const view8 = kernel.view(buf.ptr, BUFFER_BYTES);
  const view32 = new Uint32Array(kernel.memory.buffer, buf.ptr, BUFFER_BYTES / 4);
  const view64 = new Float64Array(kernel.memory.buffer, buf.ptr, BUFFER_BYTES / 8);
  const js = [
    measure('js Uint8Array loop', BUFFER_BYTES, () => jsBytes(view8)),
    measure('js Uint32Array loop', BUFFER_BYTES, () => jsWords(view32)),
    measure('js Uint32Array, 8-way OR unrolled', BUFFER_BYTES, () => jsWordsUnrolled(view32)),
    measure('js Float64Array loop', BUFFER_BYTES, () => jsFloat64Words(view64)),
  ];
  const bestJs = Math.max(...js);
  console.log(`zero detection wasm/js ratio: ${(wasm / bestJs).toFixed(2)}`);

  const nbChunks = 2 ** 24;
  const bitmap = kernel.newBitmap(nbChunks);
  // Sparse: one dirty chunk in about every 65,536 (256 of 16M), spread out.
  let seed = 12345;
  for (let i = 0; i < 256; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    bitmap.set(seed % nbChunks, 1);
  }
  const queries = 200_000;
  let found = 0;
  const t0 = performance.now();
  for (let q = 0, from = 0; q < queries; q++) {
    const next = bitmap.nextDirty(from);
    if (next < 0) from = 0;
    else { found++; from = next + 1; }
  }
  const ns = ((performance.now() - t0) * 1e6) / queries;
  console.log(`bitmap next-dirty over ${nbChunks} chunks with ${bitmap.count} dirty (${bitmap.levels} levels): ${ns.toFixed(0)} ns per search (${found} hits)`);
  // For scale: the same walk through a flat scan of level 0 words.
  const words = new Uint32Array(nbChunks / 32);
  for (let c = bitmap.nextDirty(0); c >= 0; c = bitmap.nextDirty(c + 1)) words[c >>> 5]! |= 1 << (c & 31);
  const t1 = performance.now();
  let flatFound = 0;
  for (let q = 0, w = 0; q < 2000; q++) {
    while (w < words.length && words[w] === 0) w++;
    if (w >= words.length) w = 0;
    else { flatFound++; w++; }
  }
  const flatNs = ((performance.now() - t1) * 1e6) / 2000;
  console.log(`  flat js scan of the same bitmap: ${flatNs.toFixed(0)} ns per search (${flatFound} hits)`);
}

await main();
