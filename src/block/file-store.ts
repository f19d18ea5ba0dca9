/**
 * Where image files live, as the code that opens and creates images sees
 * them: a directory tree under Node (node-store.ts), the app's OPFS directory
 * in the browser. Names are what a person typed; the store resolves them.
 *
 * Every open takes a lock (shared read-only, exclusive read-write) held until
 * the device closes, and every file is reached with its identity, so the
 * caller can tell that two names are one file.
 */
import type { BlockDevice, FileIdentity } from './block-device.js';

export interface StoreFile {
  /** The name as the store resolved it (an absolute path under Node). */
  name: string;
  device: BlockDevice;
  /** The file's identity when it was opened. */
  identity: FileIdentity;
}

export interface FileStore {
  /** The name as the store resolves it (an absolute path under Node), for comparisons and messages. */
  resolve(name: string): string;
  /**
   * Opens an existing file (following symlinks), locked: shared when
   * read-only, exclusive otherwise. A conflicting lock is a LockError; a
   * missing file is a BlockError ENOENT. `forceShare` (read-only only, as
   * qemu-img -U): no lock at all, so an image in use can be looked at.
   */
  open(name: string, options: { readOnly: boolean; forceShare?: boolean }): Promise<StoreFile>;
  /** What `name` is now; null when nothing is there. */
  identify(name: string): Promise<FileIdentity | null>;
  /** The name of a backing file as written in image `from` (relative names are relative to it). */
  backingName(name: string, from: string): string;
  /**
   * A new, empty file that will become `name`: created beside it under a
   * temporary name, exclusively, never through a symlink, and locked
   * exclusive.
   */
  createTemporary(name: string): Promise<StoreFile>;
  /**
   * Gives a temporary file its final name: the one step that replaces.
   * Without `replace` it fails (EEXIST) if `name` appeared meanwhile.
   */
  publish(temporary: string, name: string, options: { replace: boolean }): Promise<void>;
  /** Removes a file (a temporary one, or one this command made). */
  remove(name: string): Promise<void>;
}
