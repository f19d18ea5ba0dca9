/**
 * fs-ext, an optional native package: flock(2) for image locks, fcntl(2)
 * record locks (which QEMU's own locks see), and lseek(2) with SEEK_DATA /
 * SEEK_HOLE to find the holes of sparse files without reading them. When its
 * native build is missing (or DISKMIRROR_LOCKS=files asks for it) the
 * callers fall back: lock files beside the images, and no hole detection.
 */
import { createRequire } from 'node:module';

export interface FsExt {
  flock(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un', callback: (err: NodeJS.ErrnoException | null) => void): void;
  /** Only the asynchronous form is used: fs-ext's synchronous F_SETLK passes no lock description. */
  fcntl(fd: number, cmd: 'setlk' | 'getlk', arg: number, callback: (err: NodeJS.ErrnoException | null, result: number) => void): void;
  seek(fd: number, position: number, whence: number, callback: (err: NodeJS.ErrnoException | null, position: number) => void): void;
  constants: Record<string, number>;
}

/** lseek's whence values for data and holes (Linux, the BSDs and macOS agree). */
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

let loaded: FsExt | null | undefined;

/** fs-ext if it loads here, else null. */
export function fsExt(): FsExt | null {
  if (loaded === undefined) {
    loaded = null;
    if (process.env.DISKMIRROR_LOCKS !== 'files') {
      try {
        loaded = createRequire(import.meta.url)('fs-ext') as FsExt;
      } catch {
        // Not installed, or its native part was not built: the fallbacks apply.
      }
    }
  }
  return loaded;
}

/** Calls an fs-ext function with a Node-style callback as a promise. */
export function ext<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}
