/**
 * The optional native packages, loaded where they are there:
 * - fs-ext: flock(2) for image locks, and lseek(2) with SEEK_DATA /
 *   SEEK_HOLE to find the holes of sparse files without reading them;
 * - fs-native-extensions: open-file-description (OFD) byte-range locks,
 *   which are what QEMU takes on the images it opens (Linux; it ships built
 *   for the usual platforms, so nothing is compiled at install).
 * When they are missing (or DISKMIRROR_LOCKS=files asks to do without) the
 * callers fall back: lock files beside the images, and no hole detection.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface FsExt {
  flock(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un', callback: (err: NodeJS.ErrnoException | null) => void): void;
  seek(fd: number, position: number, whence: number, callback: (err: NodeJS.ErrnoException | null, position: number) => void): void;
  constants: Record<string, number>;
}

/** fs-native-extensions' byte-range locks: F_OFD_SETLK on Linux (elsewhere it locks the whole file, so it is not used there). */
export interface OfdLocks {
  /** false when another holds a conflicting lock (EAGAIN); throws other errors with their code. */
  tryLock(fd: number, offset: number, length: number, options: { shared: boolean }): boolean;
  unlock(fd: number, offset: number, length: number): void;
}

/** lseek's whence values for data and holes (Linux, the BSDs and macOS agree). */
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

const nativeAllowed = (): boolean => process.env.DISKMIRROR_LOCKS !== 'files';

function load<T>(name: string): T | null {
  try {
    return createRequire(import.meta.url)(name) as T;
  } catch {
    // Not installed, or its native part is missing here: the fallbacks apply.
    return null;
  }
}

let loadedFsExt: FsExt | null | undefined;
let loadedOfd: OfdLocks | null | undefined;

/** fs-ext if it loads here, else null. */
export function fsExt(): FsExt | null {
  if (loadedFsExt === undefined) loadedFsExt = nativeAllowed() ? load<FsExt>('fs-ext') : null;
  return loadedFsExt;
}

/** The addon under fs-native-extensions' entry: `exclusive` where the entry takes `{ shared }`, EAGAIN thrown where it answers false. */
interface OfdAddon {
  tryLock(fd: number, offset: number, length: number, exclusive: boolean): void;
  unlock(fd: number, offset: number, length: number): void;
}

/**
 * fs-native-extensions' prebuilt addon for this platform, loaded directly:
 * the package's entry finds it through a module resolver that takes longer
 * to load (tens of milliseconds) than the rest of a short command. The
 * version is pinned in package.json, as this is below its documented face;
 * where no prebuilt addon fits, the entry is used.
 */
function loadOfd(): OfdLocks | null {
  const require = createRequire(import.meta.url);
  let addon: OfdAddon;
  try {
    const dir = dirname(require.resolve('fs-native-extensions/package.json'));
    addon = require(join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'fs-native-extensions.node')) as OfdAddon;
  } catch {
    return load<OfdLocks>('fs-native-extensions');
  }
  return {
    tryLock(fd, offset, length, options) {
      try {
        addon.tryLock(fd, offset, length, !options.shared);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return false;
        throw err;
      }
    },
    unlock: (fd, offset, length) => addon.unlock(fd, offset, length),
  };
}

/** OFD byte-range locks if they can be taken here (Linux, with fs-native-extensions), else null. */
export function ofdLocks(): OfdLocks | null {
  if (loadedOfd === undefined) loadedOfd = nativeAllowed() && process.platform === 'linux' ? loadOfd() : null;
  return loadedOfd;
}

/** Calls an fs-ext function with a Node-style callback as a promise. */
export function ext<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}
