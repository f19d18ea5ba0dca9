/**
 * Image locks in the browser, as QEMU takes them: shared to read, exclusive
 * to write, held for as long as the image is open. They are Web Locks
 * (navigator.locks, in pages and in dedicated workers alike), one per image
 * (`diskmirror-image:NAME`), so every tab and worker of the origin sees
 * them, and the browser drops them when the tab that holds them goes away.
 *
 * Next to each image lock, its holder takes a shared "label" lock whose name
 * says who it is (a job by its id, or in words: `a download`) and from which tab, so
 * anybody who meets the lock, or lists the images, can tell who holds it
 * (navigator.locks.query() lists the names of held locks).
 */
import { type LockHolder, type LockMode, BlockError, LockError, describeLockHolder } from './block-device.js';
import { lockHolder } from '../qapi/errors.js';

const IMAGE_PREFIX = 'diskmirror-image:';
const LABEL_PREFIX = 'diskmirror-holder:';

/** A lock held until released (or until its tab goes away). */
export interface HeldLock {
  /** Lets go; resolves once the lock is free for others (and for this context) again. */
  release(): Promise<void>;
}

/** Who holds an image's lock, as a label names it. */
export interface ImageHolder {
  image: string;
  mode: LockMode;
  /** A job, or somebody in words (`a download`). */
  holder: LockHolder;
  /** Held from this tab (its page or its worker). */
  thisTab: boolean;
}

interface Label {
  image: string;
  mode: LockMode;
  holder: LockHolder;
  tab: string;
}

let tab = randomId();

function randomId(): string {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Names the tab this page or worker belongs to (the page passes its id to its worker). */
export function setLockTab(id: string): void {
  tab = id;
}

export function lockTab(): string {
  return tab;
}

export function imageLockName(image: string): string {
  return IMAGE_PREFIX + image;
}

function labelName(label: Label): string {
  return LABEL_PREFIX + JSON.stringify(label);
}

function parseLabel(name: string | undefined): Label | null {
  if (!name?.startsWith(LABEL_PREFIX)) return null;
  try {
    const label = JSON.parse(name.slice(LABEL_PREFIX.length)) as Label;
    if (typeof label.image !== 'string') return null;
    if (typeof label.holder === 'string') return { ...label, holder: lockHolder(label.holder) };
    const h = label.holder as Partial<LockHolder> | null;
    return (h?.kind === 'job' && typeof h.id === 'string') || (h?.kind === 'named' && typeof h.words === 'string') ? label : null;
  } catch {
    return null;
  }
}

function lockManager(): LockManager {
  const locks = (globalThis.navigator as { locks?: LockManager } | undefined)?.locks;
  if (!locks) throw new BlockError('ENOTSUP', 'open', 0, 0, 'this browser has no Web Locks (navigator.locks): images cannot be locked, so none is opened');
  return locks;
}

/** Takes the Web Lock `name` if nobody holds a conflicting one now; null otherwise. Never waits. */
export function tryWebLock(name: string, mode: LockMode): Promise<HeldLock | null> {
  return new Promise((resolve, reject) => {
    let letGo: (() => void) | null = null;
    let released: Promise<void> | null = null;
    // request() settles once the callback's promise has settled and the lock is free again.
    let settled: Promise<unknown> = Promise.resolve();
    const held: HeldLock = {
      release() {
        if (!released) {
          letGo?.();
          released = settled.then(
            () => {},
            () => {},
          );
        }
        return released;
      },
    };
    settled = lockManager().request(name, { mode, ifAvailable: true }, (lock) => {
      if (!lock) {
        resolve(null);
        return undefined;
      }
      // The lock lasts as long as this promise is pending.
      return new Promise<void>((r) => {
        letGo = r;
        resolve(held);
      });
    });
    settled.catch(reject);
  });
}

/** The Web Locks held now, anywhere in the origin. */
export async function heldLocks(): Promise<{ name: string; mode: LockMode }[]> {
  const snapshot = await lockManager().query();
  return (snapshot.held ?? []).filter((l) => l.name).map((l) => ({ name: l.name!, mode: l.mode === 'shared' ? 'shared' : 'exclusive' }));
}

/** How an image is held now. */
export interface ImageLockState {
  /** By a writer (exclusive) or by readers (shared). */
  mode: LockMode;
  /** Who holds it, as their labels say (empty for a holder that did not say). */
  holders: ImageHolder[];
}

/** Every image held now, with who holds it where a label says so. */
export async function imageLocks(): Promise<Map<string, ImageLockState>> {
  const held = await heldLocks();
  const out = new Map<string, ImageLockState>();
  for (const lock of held) {
    if (!lock.name.startsWith(IMAGE_PREFIX)) continue;
    const image = lock.name.slice(IMAGE_PREFIX.length);
    const state = out.get(image);
    if (!state) out.set(image, { mode: lock.mode, holders: [] });
    else if (lock.mode === 'exclusive') state.mode = 'exclusive';
  }
  for (const lock of held) {
    const label = parseLabel(lock.name);
    // A label whose image lock is gone is a holder letting go.
    const state = label ? out.get(label.image) : undefined;
    if (!label || !state) continue;
    const thisTab = label.tab === tab;
    if (!state.holders.some((h) => describeLockHolder(h.holder) === describeLockHolder(label.holder) && h.mode === label.mode && h.thisTab === thisTab)) {
      state.holders.push({ image: label.image, mode: label.mode, holder: label.holder, thisTab });
    }
  }
  return out;
}

/** A holder as data, as seen from this tab: another tab's is `elsewhere`. */
export function holderOf(h: ImageHolder): LockHolder {
  return h.thisTab ? h.holder : { ...h.holder, elsewhere: true };
}

/** Who holds an image (its writer, else a reader). */
export function imageHolder(state: ImageLockState): LockHolder {
  const found = state.holders.find((h) => h.mode === 'exclusive') ?? (state.mode === 'shared' ? state.holders[0] : undefined);
  // Held by somebody who has not said who (between its two locks, or another program of this origin).
  return found ? holderOf(found) : { kind: 'named', words: 'another tab' };
}

/** Who holds an image, in words. */
export function holderWords(state: ImageLockState): string {
  return describeLockHolder(imageHolder(state));
}

/**
 * Who stands in the way of taking an image in `mode` (a writer, for a
 * reader; anybody, for a writer); null when nobody does.
 */
export function conflictingHolder(state: ImageLockState | undefined, mode: LockMode): LockHolder | null {
  if (!state || (mode === 'shared' && state.mode === 'shared')) return null;
  return imageHolder(state);
}

/** The LockError taking `image` in `mode` would meet now, or null. Looks only: takes no lock. */
export async function checkImageLock(image: string, mode: LockMode): Promise<LockError | null> {
  const holder = conflictingHolder((await imageLocks()).get(image), mode);
  return holder === null ? null : new LockError(image, mode, holder);
}

/**
 * Locks `image` (shared to read, exclusive to write) for `holder` (a job,
 * or words for messages), or throws the LockError that names who holds it. Never
 * waits for a lock.
 */
export async function lockImage(image: string, mode: LockMode, by: string | LockHolder): Promise<HeldLock> {
  const holder = lockHolder(by);
  const main = await tryWebLock(imageLockName(image), mode);
  if (!main) {
    const state = (await imageLocks()).get(image);
    throw new LockError(image, mode, state ? imageHolder(state) : 'another tab');
  }
  let label: HeldLock | null = null;
  try {
    label = await tryWebLock(labelName({ image, mode, holder, tab }), 'shared');
  } catch {
    // The label only helps messages; the lock itself is what counts.
  }
  return {
    async release() {
      await Promise.all([label?.release(), main.release()]);
    },
  };
}
