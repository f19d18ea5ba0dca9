/**
 * What a checkpoint remembers of each image, so a resume onto a changed
 * image is refused: the file's identity (which file, its size, when it was
 * last modified) and, for qcow2, a digest of the header cluster and the L1
 * table (a copy with the same bytes elsewhere, or a file whose time was set
 * back, still differs there once its mapping changed).
 */
import { type BlockDevice, type FileIdentity, ImageConflictError } from '../block/block-device.js';
import type { FileStore } from '../block/file-store.js';
import type { OpenedImage } from './image-access.js';
import type { FormatName, ImageFormat } from './image-format.js';
import { Qcow2Image } from './qcow2/image.js';

export interface ImageStamp {
  name: string;
  key: string;
  /** Bytes in the file. */
  size: number;
  modifiedMs: number;
  /** The image's format and virtual size (backing files in a chain go without). */
  format?: FormatName;
  virtualSize?: number;
  /** qcow2: SHA-256 of the header cluster and the L1 table, hex. */
  digest?: string;
}

/** Unwraps fault injectors and other wrappers down to the format that owns the file. */
function formatOf(image: ImageFormat): ImageFormat {
  let at: ImageFormat & { inner?: ImageFormat; current?: { image: ImageFormat } } = image;
  for (;;) {
    if (at.current?.image) at = at.current.image;
    else if (at.inner) at = at.inner;
    else return at;
  }
}

async function digestOf(image: Qcow2Image): Promise<string> {
  const file: BlockDevice = image.file;
  const h = image.header;
  const head = new Uint8Array(Math.min(h.clusterSize, file.size));
  await file.read(0, head);
  const l1 = new Uint8Array(h.l1Size * 8);
  const inside = Math.max(0, Math.min(l1.length, file.size - h.l1TableOffset));
  if (inside > 0) await file.read(h.l1TableOffset, l1.subarray(0, inside));
  const both = new Uint8Array(head.length + l1.length);
  both.set(head);
  both.set(l1, head.length);
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', both));
  return [...hash].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The stamp of an open image whose file has `identity` now. With `digest`,
 * a qcow2 image's header and L1 table are hashed as they are on disk (flush
 * first).
 */
export async function stampImage(image: ImageFormat, name: string, identity: FileIdentity, options: { digest: boolean }): Promise<ImageStamp> {
  const inner = formatOf(image);
  const stamp: ImageStamp = {
    name,
    key: identity.key,
    size: identity.size,
    modifiedMs: identity.modifiedMs,
    format: inner.format,
    virtualSize: inner.size,
  };
  if (options.digest && inner instanceof Qcow2Image) stamp.digest = await digestOf(inner);
  return stamp;
}

function when(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

/**
 * How `now` differs from `before`, in words, or null when it does not.
 * `exact`: the image may not have changed at all (a checkpoint taken after
 * the job stopped writing); otherwise only what the job itself could not
 * have done counts (another file, another size or format), and a
 * modification later than `writesEndedMs` (when the job's writes stopped).
 */
export function describeChange(before: ImageStamp, now: ImageStamp | null, rule: { exact: boolean; writesEndedMs?: number; slackMs?: number }): string | null {
  if (!now) return `${before.name} is gone`;
  if (now.key !== before.key) return `${before.name} is another file now (it was replaced or moved)`;
  if (before.format !== undefined && now.format !== undefined && now.format !== before.format) return `${before.name} is ${now.format} now, not ${before.format}`;
  if (before.virtualSize !== undefined && now.virtualSize !== undefined && now.virtualSize !== before.virtualSize) return `${before.name} changed size (${before.virtualSize} -> ${now.virtualSize} bytes)`;
  if (rule.exact) {
    if (now.size !== before.size) return `${before.name} changed: its file is ${now.size} bytes, not ${before.size}`;
    if (now.modifiedMs !== before.modifiedMs) return `${before.name} was modified at ${when(now.modifiedMs)}, after the checkpoint (${when(before.modifiedMs)})`;
    if (before.digest !== undefined && now.digest !== undefined && now.digest !== before.digest) return `${before.name} changed: its qcow2 header or L1 table differs`;
    return null;
  }
  const ended = rule.writesEndedMs;
  if (ended !== undefined && now.modifiedMs > ended + (rule.slackMs ?? 0)) {
    return `${before.name} was modified at ${when(now.modifiedMs)}, after the job stopped (${when(ended)})`;
  }
  return null;
}

/**
 * The stamps of an opened chain: the top as its name names it now (a guest
 * may have written it), backing files as they were opened (they are held
 * shared).
 */
export async function stampChain(store: FileStore, opened: OpenedImage, digest: boolean): Promise<ImageStamp[]> {
  const [top, ...backing] = opened.chain;
  const identity = (await store.identify(top!.name)) ?? top!.identity;
  const out = [await stampImage(opened.image, top!.name, identity, { digest })];
  for (const file of backing) out.push({ name: file.name, key: file.identity.key, size: file.identity.size, modifiedMs: file.identity.modifiedMs });
  return out;
}

/** What a checkpoint remembers of its images, and when the job's writes ended. */
export interface SavedImages {
  /** The source's chain, the image first. */
  source: ImageStamp[];
  target: ImageStamp;
  /** Stamped after the job's last write: the images may not have changed at all. */
  final: boolean;
  /** When the job's writes ended at the latest (a heartbeat), for a checkpoint that is not final. */
  writesEndedMs: number;
  /** A guest began writing the source after the checkpoint (it was marked so before the write). */
  sourceWriting?: boolean;
}

/**
 * Refuses a resume onto images that changed since the checkpoint, naming
 * what changed and `how` to start again. The source must be exactly as
 * stamped; the target too when the checkpoint is final, else (after a kill,
 * a closed tab) it may only have been written until the job's writes ended.
 */
export function refuseChangedImages(saved: SavedImages, now: { source: ImageStamp[]; target: ImageStamp }, labels: { source: string; target: string }, how: string): void {
  for (let i = 0; i < Math.max(saved.source.length, now.source.length); i++) {
    const before = saved.source[i];
    if (!before) throw new ImageConflictError(labels.source, `cannot resume: the source's backing chain changed (${now.source[i]!.name} is new in it); ${how}`);
    const change = describeChange(before, now.source[i] ?? null, { exact: true });
    if (change) throw new ImageConflictError(labels.source, `cannot resume: the ${i === 0 ? 'source' : 'backing file'} ${change}; ${how}`);
  }
  // The stamps may not show it: a crash can lose a write, or keep half of it, and the file's time with it.
  if (saved.sourceWriting) {
    throw new ImageConflictError(
      labels.source,
      `cannot resume: a guest was writing the source ${saved.source[0]?.name ?? labels.source} after the last checkpoint, and after a crash nothing tells which of those writes reached it; ${how}`,
    );
  }
  const change = describeChange(saved.target, now.target, { exact: saved.final, writesEndedMs: saved.writesEndedMs, slackMs: 2000 });
  if (change) throw new ImageConflictError(labels.target, `cannot resume: the target ${change}; ${how}`);
}
