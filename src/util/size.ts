/** Sizes as people type them: 512, 64K, 1.5M, 2G, 1T (powers of 1024; a B suffix is allowed). */

const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50, E: 2 ** 60 };

export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:I?B)?\s*$/i.exec(String(text));
  if (!m) throw new RangeError(`${what} "${text}": expected a number with an optional K, M, G or T suffix`);
  const value = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(Math.round(value))) throw new RangeError(`${what} "${text}": too large`);
  if (!Number.isInteger(value)) throw new RangeError(`${what} "${text}": not a whole number of bytes`);
  return value;
}

/** 1536 -> "1.5 KiB". */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ${units[i]}`;
}
