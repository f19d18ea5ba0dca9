/**
 * The browser's storage for this page, in words: what it reports
 * (navigator.storage.estimate(): bytes used and the quota it allows this
 * origin; persisted(): whether it keeps them for sure), and what a job that
 * met its limit should say. The browser counts a file by its length, holes
 * or not: a raw image takes its whole virtual size. A browser may refuse
 * space before the quota it reports (a private window keeps files in
 * memory; a full disk): the words then say that too. Pure, but for
 * readStorage.
 */
import { formatSize } from '../util/size.js';

export interface StorageFacts {
  /** Bytes the browser counts as used by this page. */
  usage: number;
  /** Bytes it says this page may use. */
  quota: number;
  /** It keeps them unless the person removes them (persistent storage). */
  persisted: boolean;
  /** Bytes the page's images take by their files' lengths (as the list shows them). */
  images: number;
}

/** What the browser reports now (`images`: what the list's images take); null when it reports nothing (no Storage API). */
export async function readStorage(images: number): Promise<StorageFacts | null> {
  if (!navigator.storage?.estimate) return null;
  const { usage = 0, quota = 0 } = await navigator.storage.estimate();
  const persisted = (await navigator.storage.persisted?.().catch(() => false)) ?? false;
  return { usage, quota, persisted, images };
}

export function storageLeft(f: StorageFacts): number {
  return Math.max(0, f.quota - f.usage);
}

/** The header's line: "Storage: 57.0 GiB used of the 67.0 GiB the browser allows this page (10.0 GiB left)". */
export function storageLine(f: StorageFacts): string {
  return `Storage: ${formatSize(f.usage)} used of the ${formatSize(f.quota)} the browser allows this page (${formatSize(storageLeft(f))} left)`;
}

/** Whether the browser keeps the images: "kept by the browser (persistent)", or what not being so means. */
export function persistenceWords(f: StorageFacts): string {
  return f.persisted ? 'kept by the browser (persistent)' : 'not persistent: the browser may clear it when it runs short of space';
}

/** What to do when the storage is full: the same advice wherever it runs out. */
const FULL_ADVICE =
  'Delete images you no longer need (the list shows what each takes), make the target qcow2 (it grows only as data is written; a raw image takes its whole size), or use a normal window (a private window keeps images in memory, with less room)';

/**
 * A job met the storage's limit (ENOSPC on its target): a sentence that
 * names the storage, what it reports used and left, and what to do.
 * `then`: what follows once there is room ("Retry" after a failure,
 * "Resume" after a pause).
 */
export function storageFullWords(f: StorageFacts | null, then: string): string {
  if (!f) return `The browser's storage for this page is full. ${FULL_ADVICE}; then ${then}.`;
  const used = `it reports ${formatSize(f.usage)} used of the ${formatSize(f.quota)} it allows this page, ${formatSize(storageLeft(f))} left`;
  // It refused the write with room to spare by its own count: its real limit is lower than it says.
  const lower = storageLeft(f) >= 64 << 20 ? ', yet it refused more: its limit here is lower than it reports (a private window, or a disk that is full)' : '';
  return `The browser's storage for this page is full: ${used}${lower}. ${FULL_ADVICE}; then ${then}.`;
}

/**
 * Something changed since the storage was full (`before`, as it was then):
 * images were deleted or shrank, the browser allows more, or it now keeps
 * the images. Until then, Retry would meet the same wall. (The browser's
 * own usage figure moves by itself: it gives back what it had set aside
 * for open files once they close.)
 */
export function storageChanged(before: StorageFacts | null, now: StorageFacts | null): boolean {
  if (!before || !now) return false;
  return now.images < before.images || now.quota > before.quota || (now.persisted && !before.persisted);
}
