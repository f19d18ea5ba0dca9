/**
 * Errors in words, at the page's boundary. The worker's errors keep their
 * class and code across the bridge (error-transfer.ts); here each becomes a
 * sentence that names the image it is about and says what to do. Nothing
 * here reads an error's words to decide: classes and codes do.
 */
import { type LockHolder, BlockError, ImageConflictError, LockError, describeErrno, describeLockHolder } from '../qapi/errors.js';
import { WorkerError } from '../shared/worker-error.js';
import { formatSize } from '../util/size.js';
import { storageFullWords } from './storage.js';
import type { ImageEntry } from '../worker/api-types.js';

export interface MessageContext {
  /** The image the action was about (a new image's name, a target, an image to delete). */
  image?: string;
  /** The URL of an import. */
  url?: string;
  /** Which job holds an image, as the list knows it. */
  holder?: (image: string) => ImageEntry['job'] | undefined;
}

/**
 * A sentence: one full stop, and the first letter up unless the first
 * word is a name (an image, a file: it has a dot or a digit in it, or is
 * one of `names`) that must read as it is spelled.
 */
export function sentence(text: string, names: readonly string[] = []): string {
  const t = text.trim();
  if (!t) return t;
  const first = /^\S+/.exec(t)![0].replace(/[:,;]$/, '');
  const isName = /[.\d_/"]/.test(first) || names.some((n) => t.startsWith(n));
  const up = isName ? t : t[0]!.toUpperCase() + t.slice(1);
  return /[.!?…]$/.test(up) ? up : `${up}.`;
}

/** Who holds an image, as a person reads it: "mirror0 (its target)", "another tab". */
function holderPhrase(image: string, holder: LockHolder, ctx: MessageContext): { words: string; importing: boolean } {
  if (holder.kind !== 'job') return { words: describeLockHolder(holder), importing: false };
  const job = holder.id;
  if (holder.elsewhere) return { words: `${job} in another tab`, importing: false };
  const held = ctx.holder?.(image);
  if (held && held.id === job) return { words: `${job} (its ${held.role})`, importing: held.kind === 'import' && held.role === 'target' };
  return { words: job, importing: false };
}

function lockSentence(err: LockError, ctx: MessageContext): string {
  const { words, importing } = holderPhrase(err.image, err.by, ctx);
  if (importing) return `${err.image} is still being imported (${words.replace(/ \(its target\)$/, '')}): wait until the import ends.`;
  return `${err.image} is in use by ${words}: wait until it ends, or choose another image.`;
}

/** What an HTTP status means for an image to import, and what to do. */
function httpWords(status: number): string {
  if (status === 404 || status === 410) return 'there is no file at that address: check the URL';
  if (status === 401 || status === 403) return 'the server refuses to give the file to this page: it may need a login the page cannot send';
  if (status === 416) return 'the server refused the ranges asked for: the file may have changed while it was read';
  if (status >= 500) return 'the server failed: try again later';
  return 'the server did not send the file';
}

function blockSentence(err: BlockError, ctx: MessageContext): string {
  const image = ctx.image ?? 'the image';
  if (err.httpStatus !== undefined) return `The server answered HTTP ${err.httpStatus} for ${ctx.url ?? 'the URL'}: ${httpWords(err.httpStatus)}.`;
  if (ctx.url && err.code === 'ETIMEDOUT') return `The server of ${ctx.url} did not answer: check the address, or try again later.`;
  switch (err.code) {
    case 'EEXIST':
      return `An image named ${image} already exists: choose another name, or delete it first.`;
    case 'ENOSPC':
      return storageFullWords(null, 'try again');
    case 'ENOENT':
      return `${image} is not there any more; the list shows what is.`;
    case 'EBUSY':
      return `${image} is open elsewhere (another tab, or a job): close it there first.`;
  }
  const detail = err.detail.replace(/\.$/, '');
  if (err.op === 'open') return `${sentence(detail).replace(/\.$/, '')} (${err.code}).`;
  return `${err.op[0]!.toUpperCase()}${err.op.slice(1)} of ${formatSize(err.bytes)} at ${formatSize(err.offset)} failed: ${detail} (${err.code}).`;
}

function workerSentence(err: WorkerError, ctx: MessageContext): string {
  const url = ctx.url ?? 'the URL';
  switch (err.code) {
    case 'url-unreachable':
      return `The server did not allow this page to read ${url}: it must send CORS headers (Access-Control-Allow-Origin) and answer Range requests. Check the address too.`;
    case 'url-no-range':
      return `The server of ${url} does not answer Range requests: it must, for the page to copy the image in pieces.`;
    case 'picked-file-gone':
      return `${sentence(err.message).replace(/\.$/, '')}: this page no longer holds the file since it was reloaded.`;
    default:
      return sentence(err.message, [ctx.image ?? '', ctx.url ?? ''].filter(Boolean));
  }
}

/** What went wrong, in a sentence for the person who asked. */
export function explain(err: unknown, ctx: MessageContext = {}): string {
  if (err instanceof LockError) return lockSentence(err, ctx);
  if (err instanceof ImageConflictError) {
    if (err.code === 'EEXIST') return `An image named ${err.image} already exists: choose another name, or delete it first.`;
    return sentence(err.message, [err.image]);
  }
  if (err instanceof BlockError) return blockSentence(err, ctx);
  if (err instanceof WorkerError) return workerSentence(err, ctx);
  const names = [ctx.image, ctx.url].filter((n): n is string => Boolean(n));
  return sentence(err instanceof Error ? err.message : String(err), names);
}
