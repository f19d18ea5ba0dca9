/** A small seeded PRNG (mulberry32, shared with the soak and the fuzzer), so every random test can be replayed. */
export { prng as rng } from '../../stress/prng.js';

/** An integer in [0, n). */
export function randInt(next: () => number, n: number): number {
  return Math.floor(next() * n);
}
