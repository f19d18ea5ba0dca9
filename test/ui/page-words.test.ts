/** The page's words for errors and endings (messages.ts, job-ending.ts): pure functions, checked here without a browser. */
import { describe, expect, it } from 'vitest';
import { BlockError, ImageConflictError, LockError } from '../../src/block/block-device.js';
import { FormatError } from '../../src/format/image-format.js';
import { deserializeError, serializeError } from '../../src/shared/error-transfer.js';
import { WorkerError } from '../../src/shared/worker-error.js';
import { describeEnding } from '../../src/ui/job-ending.js';
import { eventTime, eventWords, sinceStart } from '../../src/ui/event-words.js';
import { explain, sentence } from '../../src/ui/messages.js';
import type { JobRelease } from '../../src/worker/api-types.js';

describe('explain', () => {
  const holder = (image: string) =>
    image === 'disk.img' ? ({ id: 'mirror3', kind: 'import', role: 'target' } as const) : image === 'demo.raw' ? ({ id: 'mirror0', kind: 'mirror', role: 'source' } as const) : undefined;

  it('names the job that holds an image, and how (the holder is data, also after crossing the worker boundary)', () => {
    const cross = (err: LockError) => deserializeError(JSON.parse(JSON.stringify(serializeError(err))));
    const mirror0 = new LockError('demo.raw', 'exclusive', { kind: 'job', id: 'mirror0' });
    expect(mirror0.message).toBe('Failed to get "write" lock: demo.raw is in use by the job "mirror0"');
    expect(explain(mirror0, { holder })).toBe('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');
    expect(explain(cross(mirror0), { holder })).toBe('demo.raw is in use by mirror0 (its source): wait until it ends, or choose another image.');
    expect(explain(new LockError('disk.img', 'shared', { kind: 'job', id: 'mirror3' }), { holder })).toBe('disk.img is still being imported (mirror3): wait until the import ends.');
    const elsewhere = new LockError('x.raw', 'exclusive', { kind: 'job', id: 'mirror1', elsewhere: true });
    expect(elsewhere.holder).toBe('the job "mirror1" in another tab');
    expect(explain(cross(elsewhere), { holder })).toBe('x.raw is in use by mirror1 in another tab: wait until it ends, or choose another image.');
    expect(explain(new LockError('x.raw', 'exclusive', 'another tab'))).toBe('x.raw is in use by another tab: wait until it ends, or choose another image.');
    // Words are words: a holder named in words that look like a job's is not read as one.
    expect(explain(new LockError('demo.raw', 'exclusive', 'the job "mirror0"'), { holder })).toBe('demo.raw is in use by the job "mirror0": wait until it ends, or choose another image.');
  });

  it('says a taken name as such, whichever layer found it, also after crossing the worker boundary', () => {
    const taken = new ImageConflictError('demo.raw', 'demo.raw already exists', { code: 'EEXIST' });
    const crossed = deserializeError(serializeError(taken));
    expect(explain(crossed)).toBe('An image named demo.raw already exists: choose another name, or delete it first.');
    expect(explain(new BlockError('EEXIST', 'open', 0, 0, 'x.raw already exists; it was left alone'), { image: 'x.raw' })).toBe(
      'An image named x.raw already exists: choose another name, or delete it first.',
    );
    // Any other conflict keeps its own words.
    expect(explain(deserializeError(serializeError(new ImageConflictError('a', 'a is the source'))))).toBe('a is the source.');
  });

  it('tells a server that refuses the page from one that ignores Range', () => {
    const url = 'http://example.test/disk.img';
    expect(explain(new WorkerError('url-unreachable', 'x'), { url })).toBe(
      `The server did not allow this page to read ${url}: it must send CORS headers (Access-Control-Allow-Origin) and answer Range requests. Check the address too.`,
    );
    expect(explain(new WorkerError('url-no-range', 'x'), { url })).toContain('does not answer Range requests');
  });

  it('puts a failed request in sizes, and anything else in a sentence', () => {
    expect(explain(new BlockError('EIO', 'read', 5 << 20, 65536, 'the disk said no'))).toBe('Read of 64.0 KiB at 5.00 MiB failed: the disk said no (EIO).');
    expect(explain(new BlockError('ENOSPC', 'write', 0, 1, 'full'))).toContain("storage for this page is full");
    expect(explain(new FormatError('unknown format', 'format'))).toBe('Unknown format.');
    expect(explain('plain words!')).toBe('Plain words!');
    expect(sentence('')).toBe('');
    // A message that starts with a name keeps its spelling.
    expect(explain(new ImageConflictError('demo.raw', 'demo.raw is both the source and the target'))).toBe('demo.raw is both the source and the target.');
    expect(sentence('disk is busy', ['disk'])).toBe('disk is busy.');
    expect(sentence('"x" is not a URL')).toBe('"x" is not a URL.');
  });
});

describe('describeEnding', () => {
  const release = (over: Partial<JobRelease>): JobRelease => ({
    id: 'mirror0',
    kind: 'mirror',
    outcome: 'completed',
    source: 'demo.raw',
    target: 'copy.qcow2',
    targetImage: { name: 'copy.qcow2', format: 'qcow2', virtualSize: 8 << 20, fileSize: 1 << 20 } as JobRelease['targetImage'],
    resumable: false,
    ...over,
  });

  it('done: the target with its format and size, once known; Download', () => {
    expect(describeEnding({ kind: 'mirror', outcome: 'completed', target: 'copy.qcow2', offset: 8 << 20 })).toEqual({ tone: 'done', word: 'Done', text: 'Done: copy.qcow2', actions: ['download'] });
    expect(describeEnding({ kind: 'mirror', outcome: 'completed', target: 'copy.qcow2', offset: 8 << 20, release: release({}) }).text).toBe('Done: copy.qcow2 (qcow2, 8.00 MiB)');
  });

  it('failed: where, which side, which errno; Delete and Retry, or only Retry when nothing was kept', () => {
    const lastError = { device: 'mirror0', operation: 'read', action: 'report', errno: 'EIO', offset: 5 << 20, bytes: 1 << 20, message: 'x' } as const;
    const failed = describeEnding({ kind: 'mirror', outcome: 'failed', target: 'copy.qcow2', error: 'Input/output error', lastError, offset: 5 << 20 });
    expect(failed).toEqual({ tone: 'failed', word: 'Failed', text: 'Failed at 5.00 MiB: source read error (EIO); copy.qcow2 is incomplete', actions: ['delete', 'retry'] });
    const gone = describeEnding({ kind: 'mirror', outcome: 'failed', target: 't.raw', lastError: { ...lastError, operation: 'write', offset: 0 }, offset: 0, release: release({ targetImage: null, outcome: 'failed' }) });
    expect(gone.text).toBe('Failed at 0 bytes: target write error (EIO); nothing was copied, so t.raw was not kept');
    expect(gone.actions).toEqual(['retry']);
    expect(describeEnding({ kind: 'mirror', outcome: 'failed', target: 't.raw', error: 'Input/output error', offset: 4096 }).text).toBe('Failed at 4.00 KiB: Input/output error; t.raw is incomplete');
  });

  it('an NBD export as the target stays on its server: never "not kept", no Download or Delete, Retry when it failed', () => {
    const uri = 'nbd+ws://localhost:5701/disk';
    const nbd = release({ target: uri, targetImage: null });
    expect(describeEnding({ kind: 'mirror', outcome: 'completed', target: uri, offset: 1, release: nbd })).toEqual({ tone: 'done', word: 'Done', text: `Done: ${uri}`, actions: [] });
    expect(describeEnding({ kind: 'mirror', outcome: 'cancelled', target: uri, offset: 0, release: nbd })).toEqual({ tone: 'cancelled', word: 'Cancelled', text: `Cancelled; ${uri} holds what was copied`, actions: [] });
    const failed = describeEnding({ kind: 'mirror', outcome: 'failed', target: uri, error: 'Input/output error', offset: 0, release: { ...nbd, outcome: 'failed' } });
    expect(failed.text).toBe(`Failed at 0 bytes: Input/output error; ${uri} is incomplete`);
    expect(failed.actions).toEqual(['retry']);
  });

  it('cancelled: what the target holds', () => {
    expect(describeEnding({ kind: 'import', outcome: 'cancelled', target: 'disk.img', offset: 1 }).text).toBe('Cancelled; disk.img holds what was copied');
    expect(describeEnding({ kind: 'import', outcome: 'cancelled', target: 'disk.img', offset: 0, release: release({ targetImage: null }) }).text).toBe(
      'Cancelled before anything was copied; disk.img was not kept',
    );
  });
});

describe('eventWords', () => {
  const ts = { seconds: 1, microseconds: 201000 };
  it('says an error with its place, errno, the policy and what it did', () => {
    const e = { event: 'BLOCK_JOB_ERROR', data: { device: 'mirror0', operation: 'read', action: 'stop', errno: 'EIO', offset: 4 << 20, bytes: 1 << 20, message: 'x' }, timestamp: ts } as const;
    expect(sinceStart(eventTime(e) - 0)).toBe('+1.201 s');
    expect(eventWords(e, { 'on-source-error': 'stop' })).toEqual({ job: 'mirror0', kind: 'error', text: 'read error at 4.00 MiB (1.00 MiB): EIO; on-source-error=stop, so the job paused (io-status failed)' });
    expect(eventWords({ ...e, data: { ...e.data, operation: 'write', action: 'ignore' } }).text).toBe('write error at 4.00 MiB (1.00 MiB): EIO; the on-target-error policy chose ignore, so the range stays dirty and is retried');
    expect(eventWords({ ...e, data: { ...e.data, errno: 'ENOSPC' } }, { 'on-source-error': 'enospc' }).text).toContain('on-source-error=enospc, so the job paused (io-status nospace)');
  });
  it('says status changes and endings', () => {
    expect(eventWords({ event: 'JOB_STATUS_CHANGE', data: { id: 'm', status: 'standby' }, timestamp: ts }).text).toBe('standby (paused while ready)');
    const end = { type: 'mirror', device: 'm', len: 8 << 20, offset: 5 << 20, speed: 0 } as const;
    expect(eventWords({ event: 'BLOCK_JOB_COMPLETED', data: { ...end, error: 'Input/output error' }, timestamp: ts })).toEqual({ job: 'm', kind: 'error', text: 'failed: Input/output error (5.00 MiB of 8.00 MiB copied)' });
    expect(eventWords({ event: 'BLOCK_JOB_CANCELLED', data: end, timestamp: ts }).kind).toBe('end');
  });
});

describe('what a brought image\'s name says of its format', () => {
  it('warns when the extension names another format than the content, but not for .img, which any format wears', async () => {
    const { nameMismatch } = await import('../../src/ui/format-names.js');
    expect(nameMismatch('bad.qcow2', 'raw')).toContain('Its name says qcow2, but its content is raw');
    expect(nameMismatch('disk.vhd', 'vdi')).toContain('Its name says vpc, but its content is vdi');
    expect(nameMismatch('jammy-server-cloudimg-amd64.img', 'qcow2')).toBe('');
    expect(nameMismatch('copy.qcow2', 'qcow2')).toBe('');
    expect(nameMismatch('noextension', 'vpc')).toBe('');
  });
});
