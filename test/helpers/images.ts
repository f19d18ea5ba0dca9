/** Small helpers to build images in memory for job tests. */
import { MemoryDevice } from '../../src/block/memory.js';
import { RawImage } from '../../src/format/raw.js';
import { FaultImage } from '../../src/format/fault-image.js';
import { pattern } from '../contract/device-contract.js';
import { rng } from './random.js';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import type { MirrorJob } from '../../src/mirror/mirror-job.js';

/** A raw image in memory: patterned data with holes of zeroes every few chunks. */
export function memoryRaw(bytes: number, seed = 1, holes = true): { image: RawImage; device: MemoryDevice } {
  const data = pattern(bytes, seed);
  if (holes) for (let off = 0; off < bytes; off += 5 * 65536) data.fill(0, off, Math.min(bytes, off + 2 * 65536));
  const device = new MemoryDevice(data);
  return { image: new RawImage(device), device };
}

export function blankRaw(bytes: number): { image: RawImage; device: MemoryDevice } {
  const device = new MemoryDevice(bytes);
  return { image: new RawImage(device), device };
}

export function withFaults<T extends RawImage>(image: T): FaultImage {
  return new FaultImage(image);
}

/** Records a job's events; `names()` gives them as short strings for sequence asserts. */
export function recordEvents(job: MirrorJob): { events: AnyQmpEvent[]; names(): string[] } {
  const events: AnyQmpEvent[] = [];
  job.on((e) => events.push(e), { replay: true });
  return {
    events,
    names: () =>
      events.map((e) =>
        e.event === 'JOB_STATUS_CHANGE'
          ? e.data.status
          : e.event === 'BLOCK_JOB_ERROR'
            ? `ERROR:${e.data.operation}:${e.data.action}`
            : e.event,
      ),
  };
}

/** Resolves at the first event that satisfies `test`. */
export function waitForEvent(job: MirrorJob, test: (e: AnyQmpEvent) => boolean, timeoutMs = 20_000): Promise<AnyQmpEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching event within ${timeoutMs} ms (status ${job.status})`));
    }, timeoutMs);
    const off = job.on((e) => {
      if (test(e)) {
        clearTimeout(timer);
        off();
        resolve(e);
      }
    });
  });
}

export const isStatus = (status: string) => (e: AnyQmpEvent) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === status;
export const isEvent = (name: string) => (e: AnyQmpEvent) => e.event === name;

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Wraps an image so every read and write takes a random few milliseconds: reorders concurrent I/O. */
export function withJitter<T extends import('../../src/format/image-format.js').ImageFormat>(image: T, seed = 1, maxMs = 3): T {
  const next = rng(seed);
  const delay = () => new Promise<void>((r) => setTimeout(r, Math.floor(next() * (maxMs + 1))));
  return new Proxy(image, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      if (prop === 'read' || prop === 'write' || prop === 'writeZeroes') {
        return async (...args: unknown[]) => {
          await delay();
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
}
