/**
 * A read-only device over an HTTP(S) resource, read with Range requests.
 * Each read is its own request, so reads may run in parallel.
 *
 * Failures map to codes at this boundary: a network failure or a 5xx is EIO,
 * a 404 is ENOENT, 401/403 are EACCES, a server that answers a ranged request
 * with the whole body (200) does not support ranges: ENOTSUP. When the server
 * gave a strong ETag, reads carry If-Range, so a resource that changes while
 * it is being read is reported (ESTALE) instead of mixing two versions.
 */
import { type BlockDevice, type BlockOp, type Errno, BlockError, checkDeviceRequest, closedError, readOnlyError } from './block-device.js';

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

export interface HttpDeviceOptions {
  fetch?: FetchFn;
  /** Aborts every request in flight when closed or signalled. */
  signal?: AbortSignal;
  /** A read whose server sends nothing for this long fails (ETIMEDOUT); default 30 s. */
  idleTimeoutMs?: number;
}

/** How long a read may wait for its server's next bytes. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

function statusCode(status: number): Errno {
  if (status === 404 || status === 410) return 'ENOENT';
  if (status === 401 || status === 403) return 'EACCES';
  if (status === 416) return 'EINVAL';
  return 'EIO';
}

/** "bytes START-END/TOTAL" -> its numbers, or null. */
function parseContentRange(value: string | null): { start: number; end: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

export class HttpDevice implements BlockDevice {
  readonly readOnly = true;
  private closed = false;
  private readonly abort = new AbortController();

  private constructor(
    readonly url: string,
    readonly size: number,
    private readonly etag: string | null,
    private readonly fetchFn: FetchFn,
    private readonly idleTimeoutMs: number,
  ) {}

  static async open(url: string, options: HttpDeviceOptions = {}): Promise<HttpDevice> {
    const fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const request = async (init: RequestInit): Promise<Response> => {
      const timeout = AbortSignal.timeout(idleMs);
      try {
        return await fetchFn(url, { ...init, signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout });
      } catch (err) {
        if (timeout.aborted) throw new BlockError('ETIMEDOUT', 'open', 0, 0, `${url}: the server did not answer in ${idleMs / 1000} s`, { cause: err });
        throw new BlockError('EIO', 'open', 0, 0, `${url}: ${(err as Error).message}`, { cause: err });
      }
    };
    // HEAD gives the size when the server advertises ranges; otherwise ask for one byte.
    let size: number | null = null;
    let etag: string | null = null;
    const head = await request({ method: 'HEAD' });
    if (head.ok && head.headers.get('accept-ranges')?.toLowerCase() === 'bytes') {
      const length = Number(head.headers.get('content-length'));
      if (head.headers.get('content-length') !== null && Number.isSafeInteger(length) && length >= 0) size = length;
      etag = head.headers.get('etag');
    } else if (head.status >= 400 && head.status !== 405 && head.status !== 501) {
      throw new BlockError(statusCode(head.status), 'open', 0, 0, `${url}: HTTP ${head.status} ${head.statusText}`, { httpStatus: head.status });
    }
    if (size === null) {
      const probe = await request({ headers: { Range: 'bytes=0-0' } });
      await probe.body?.cancel();
      if (probe.status === 200) {
        throw new BlockError('ENOTSUP', 'open', 0, 0, `${url}: the server ignores Range requests (answered 200 to a ranged request)`);
      }
      if (probe.status === 416) {
        // An empty resource cannot serve byte 0: "Content-Range: bytes */0".
        if (/^bytes \*\/0$/.test(probe.headers.get('content-range')?.trim() ?? '')) size = 0;
      } else if (probe.status !== 206) {
        throw new BlockError(statusCode(probe.status), 'open', 0, 0, `${url}: HTTP ${probe.status} ${probe.statusText}`, { httpStatus: probe.status });
      } else {
        const range = parseContentRange(probe.headers.get('content-range'));
        if (!range || range.total === null) {
          throw new BlockError('ENOTSUP', 'open', 0, 0, `${url}: no size in Content-Range "${probe.headers.get('content-range')}"`);
        }
        size = range.total;
        etag = probe.headers.get('etag');
      }
      if (size === null) throw new BlockError('EIO', 'open', 0, 0, `${url}: could not learn the size`);
    }
    const strongEtag = etag && !etag.startsWith('W/') ? etag : null;
    return new HttpDevice(url, size, strongEtag, fetchFn, idleMs);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    const op: BlockOp = 'read';
    const bytes = into.length;
    if (this.closed) throw closedError(op, offset, bytes);
    checkDeviceRequest(op, offset, bytes, this.size, true);
    if (bytes === 0) return;
    const fail = (code: Errno, detail: string, cause?: unknown): BlockError =>
      new BlockError(code, op, offset, bytes, `${this.url}: ${detail}`, { cause });
    const headers: Record<string, string> = { Range: `bytes=${offset}-${offset + bytes - 1}` };
    if (this.etag) headers['If-Range'] = this.etag;
    // A server that stalls (before its answer or inside its body) fails the read once it has been silent for idleTimeoutMs.
    const request = new AbortController();
    const cancelRequest = () => request.abort();
    this.abort.signal.addEventListener('abort', cancelRequest);
    let timedOut = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const quiet = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        request.abort();
      }, this.idleTimeoutMs);
    };
    const why = (err: unknown): BlockError =>
      timedOut
        ? fail('ETIMEDOUT', `the server sent nothing for ${this.idleTimeoutMs / 1000} s`, err)
        : fail(this.closed ? 'ECANCELED' : 'EIO', (err as Error).message, err);
    quiet();
    try {
      await this.readInto(offset, into, headers, request.signal, quiet, fail, why);
    } finally {
      clearTimeout(timer);
      this.abort.signal.removeEventListener('abort', cancelRequest);
    }
  }

  private async readInto(
    offset: number,
    into: Uint8Array,
    headers: Record<string, string>,
    signal: AbortSignal,
    heard: () => void,
    fail: (code: Errno, detail: string, cause?: unknown) => BlockError,
    why: (err: unknown) => BlockError,
  ): Promise<void> {
    const bytes = into.length;
    let response: Response;
    try {
      response = await this.fetchFn(this.url, { headers, signal });
    } catch (err) {
      throw why(err);
    }
    heard();
    if (response.status !== 206) {
      await response.body?.cancel().catch(() => {});
      if (response.status === 200) {
        throw this.etag
          ? fail('ESTALE', 'the resource changed on the server (If-Range no longer matches)')
          : fail('ENOTSUP', 'the server ignored the Range request');
      }
      throw fail(statusCode(response.status), `HTTP ${response.status} ${response.statusText}`);
    }
    const range = parseContentRange(response.headers.get('content-range'));
    if (range && (range.start !== offset || range.end !== offset + bytes - 1)) {
      await response.body?.cancel().catch(() => {});
      throw fail('EIO', `asked for bytes ${offset}-${offset + bytes - 1}, got ${range.start}-${range.end}`);
    }
    // Stream the body straight into the caller's buffer.
    let done = 0;
    try {
      const reader = response.body!.getReader();
      for (;;) {
        const { done: end, value } = await reader.read();
        if (end) break;
        if (done + value.length > bytes) {
          await reader.cancel();
          throw fail('EIO', `the server sent more than the ${bytes} bytes asked for`);
        }
        into.set(value, done);
        done += value.length;
        heard();
      }
    } catch (err) {
      if (err instanceof BlockError) throw err;
      throw why(err);
    }
    if (done !== bytes) throw fail('EIO', `short body: ${done} of ${bytes} bytes`);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    throw readOnlyError('write', offset, data.length);
  }

  async flush(): Promise<void> {
    if (this.closed) throw closedError('flush', 0, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
  }
}
