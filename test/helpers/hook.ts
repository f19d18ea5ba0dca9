/** Small tools for bending an image's behaviour in a test: wrap one method, wait a while. */
import type { ImageFormat } from '../../src/format/image-format.js';

/** Wraps one method of an image. */
export function hook<T extends ImageFormat>(image: T, method: string, wrap: (original: (...a: never[]) => Promise<unknown>, ...args: never[]) => Promise<unknown>): T {
  return new Proxy(image, {
    get(t, p, r) {
      const v = Reflect.get(t, p, r);
      if (p === method) return (...args: never[]) => wrap((v as (...a: never[]) => Promise<unknown>).bind(t), ...args);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}

export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
