/**
 * A job that meets the browser's storage limit: its ending names the
 * storage, what the browser reports used and left, and what to do; Retry is
 * offered only once a later report shows something changed (space freed,
 * or the images kept for sure). An injected ENOSPC is a fault, not the
 * storage: it ends as any other failure.
 */
import { describe, expect, it } from 'vitest';
import type { AnyQmpEvent, EventData } from '../../src/qapi/events.js';
import { describeEnding } from '../../src/ui/job-ending.js';
import { JobStore } from '../../src/ui/job-store.js';
import { stopWords } from '../../src/ui/stop-dialog.js';
import { type StorageFacts, storageChanged, storageFullWords, storageLine } from '../../src/ui/storage.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const at = { seconds: 0, microseconds: 0 };

function enospc(fault: EventData['BLOCK_JOB_ERROR']['fault'] = null): EventData['BLOCK_JOB_ERROR'] {
  return { device: 'mirror0', operation: 'write', action: 'report', errno: 'ENOSPC', offset: 3 * MiB, bytes: MiB, message: 'No space left on device', fault };
}

function failedOutOfSpace(store: JobStore, fault: EventData['BLOCK_JOB_ERROR']['fault'] = null): void {
  store.track('mirror0', { kind: 'mirror', source: 'demo.raw', target: 'copy.qcow2' });
  const events: AnyQmpEvent[] = [
    { event: 'BLOCK_JOB_ERROR', data: enospc(fault), timestamp: at },
    { event: 'BLOCK_JOB_COMPLETED', data: { device: 'mirror0', type: 'mirror', len: 8 * MiB, offset: 3 * MiB, speed: 0, error: 'No space left on device' }, timestamp: at },
    { event: 'JOB_STATUS_CHANGE', data: { id: 'mirror0', status: 'concluded' }, timestamp: at },
  ] as AnyQmpEvent[];
  for (const e of events) store.onEvent(e);
}

const full: StorageFacts = { usage: 10 * GiB, quota: 10 * GiB, persisted: false, images: 10 * GiB };

describe('storage words', () => {
  it('the header says what the browser reports, used of allowed and what is left (never below 0)', () => {
    expect(storageLine({ usage: 57 * GiB, quota: 67 * GiB, persisted: false, images: 50 * GiB })).toBe('Storage: 57.0 GiB used of the 67.0 GiB the browser allows this page (10.0 GiB left)');
    expect(storageLine({ usage: 12 * GiB, quota: 10 * GiB, persisted: true, images: 0 })).toContain('(0 bytes left)');
  });

  it('a full storage names the limit, what is used and left, and what to do; room to spare by its own count is said as a lower limit', () => {
    const said = storageFullWords(full, 'press Retry');
    expect(said).toContain("The browser's storage for this page is full: it reports 10.0 GiB used of the 10.0 GiB it allows this page, 0 bytes left.");
    expect(said).toContain('Delete images you no longer need');
    expect(said).toContain('use a normal window');
    expect(said).toMatch(/then press Retry\.$/);
    expect(said).not.toContain('lower than it reports');
    expect(storageFullWords({ usage: 200 * MiB, quota: 10 * GiB, persisted: false, images: 200 * MiB }, 'press Retry')).toContain('yet it refused more: its limit here is lower than it reports');
  });

  it('a change is an image deleted, a larger quota, or the images kept for sure; the same report, or usage alone falling, is no change', () => {
    expect(storageChanged(full, full)).toBe(false);
    // The browser gives back what it set aside for open files: usage falls with nothing freed.
    expect(storageChanged(full, { ...full, usage: 9 * GiB })).toBe(false);
    expect(storageChanged(full, { ...full, usage: 9 * GiB, images: 9 * GiB })).toBe(true);
    expect(storageChanged(full, { ...full, quota: 11 * GiB })).toBe(true);
    expect(storageChanged(full, { ...full, persisted: true })).toBe(true);
    expect(storageChanged(null, full)).toBe(false);
  });
});

describe('a job that ran out of space', () => {
  it('ends naming the storage, offers Delete but not Retry until a later report shows space freed', () => {
    const store = new JobStore();
    failedOutOfSpace(store);
    store.storageNow(full);
    let job = store.get('mirror0')!;
    expect(job.ending?.text).toBe("Failed at 3.00 MiB: target write error (ENOSPC); copy.qcow2 is incomplete: the browser's storage ran out");
    expect(job.ending?.advice).toContain('it reports 10.0 GiB used of the 10.0 GiB it allows this page, 0 bytes left');
    expect(job.ending?.advice).toContain('Retry, offered here once something changed');
    expect(job.ending?.actions).toEqual(['delete']);
    // The same report again (the list looked again): still no Retry.
    store.storageNow(full);
    expect(store.get('mirror0')!.ending?.actions).toEqual(['delete']);
    // Usage alone fell (the browser gave back what it set aside): still no Retry.
    store.storageNow({ ...full, usage: 9 * GiB });
    expect(store.get('mirror0')!.ending?.actions).toEqual(['delete']);
    // An image deleted.
    store.storageNow({ ...full, usage: 8 * GiB, images: 9 * GiB });
    job = store.get('mirror0')!;
    expect(job.ending?.actions).toEqual(['delete', 'retry']);
    expect(job.ending?.advice).toMatch(/then press Retry\.$/);
    // The words keep what the storage said when the job ended.
    expect(job.ending?.advice).toContain('0 bytes left');
  });

  it('an injected ENOSPC (a fault rule) ends as any failure, Retry offered at once', () => {
    const store = new JobStore();
    failedOutOfSpace(store, { rule: 'target write 1M@3M ENOSPC', armed: false });
    store.storageNow(full);
    const ending = store.get('mirror0')!.ending!;
    expect(ending.advice).toBeUndefined();
    expect(ending.actions).toEqual(['delete', 'retry']);
  });

  it('without any report yet, the ending still says the storage ran out and what to do', () => {
    const ending = describeEnding({ kind: 'mirror', outcome: 'failed', target: 'copy.qcow2', lastError: enospc(), offset: 0 });
    expect(ending.advice).toContain("The browser's storage for this page is full. Delete images");
    expect(ending.actions).toEqual(['delete']);
  });

  it('paused under enospc, the stop dialog names the storage as reported', () => {
    const words = stopWords('mirror0', { ...enospc(), action: 'stop' }, 'nospace', false, full);
    expect(words.text).toContain('io-status nospace');
    expect(words.text).toContain("The browser's storage for this page is full: it reports 10.0 GiB used");
    expect(words.text).toMatch(/then press Resume\.$/);
  });
});
