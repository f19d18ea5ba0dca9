/**
 * A lesson's run kept as frames and events, bounded, and carried in a link:
 * what goes in comes back out; a full record keeps spanning the whole run;
 * a link that is not one of ours is refused by name, a small one that
 * unpacks to gigabytes included.
 */
import { deflateSync, strToU8 } from 'fflate';
import { describe, expect, it } from 'vitest';
import { RecordError, RunHistory, decodeRecord, encodeRecord, moment } from '../../src/lessons/record.js';
import { makeEvent } from '../../src/qapi/events.js';

const frame = (atMs: number, offset = atMs) => ({ atMs, status: 'running', ioStatus: 'ok', len: 8 << 20, offset, cells: 'cd'.repeat(64) });

const code = (value: unknown) => Buffer.from(deflateSync(strToU8(JSON.stringify(value)))).toString('base64url');

describe('a lesson run record', () => {
  it('round-trips through a link: frames, events, result', () => {
    const h = new RunHistory('stop', 'pauses', 8 << 20);
    h.frame(frame(0));
    h.event(10, makeEvent('JOB_STATUS_CHANGE', { id: 'mirror0', status: 'paused' }));
    h.frame({ ...frame(20), status: 'paused', ioStatus: 'failed' });
    h.record.result = { tone: 'right', headline: 'Your prediction was right', checks: [{ claim: 'c', holds: true, observed: 'o' }] };
    const back = decodeRecord(encodeRecord(h.record));
    expect(back).toEqual(h.record);
    expect(moment(back, 0).events).toEqual([]);
    expect(moment(back, 1).frame?.ioStatus).toBe('failed');
    expect(moment(back, 1).events).toHaveLength(1);
  });

  it('keeps no frame that shows nothing new, and when full halves its step but still spans the run', () => {
    const h = new RunHistory('stop', 'pauses', 8 << 20);
    h.frame(frame(0));
    h.frame(frame(0));
    expect(h.record.frames).toHaveLength(1);
    for (let t = 1; t <= 5000; t++) h.frame(frame(t));
    expect(h.record.frames.length).toBeLessThanOrEqual(401);
    expect(h.record.frames.length).toBeGreaterThan(100);
    expect(h.record.frames[0]!.atMs).toBe(0);
    expect(h.record.frames.at(-1)!.atMs).toBe(5000);
    for (let i = 0; i < 1500; i++) h.event(i, makeEvent('JOB_STATUS_CHANGE', { id: 'mirror0', status: 'running' }));
    expect(h.record.events).toHaveLength(1000);
    expect(h.record.eventsDropped).toBe(500);
    // A full record still fits a link.
    expect(encodeRecord(h.record).length).toBeLessThan(200_000);
  });

  it('refuses what is not a record, saying why', () => {
    const good = new RunHistory('stop', 'pauses', 8 << 20).record;
    const cases: [string, RegExp][] = [
      ['not base64!', /not base64url/],
      ['AAAA', /does not unpack/],
      [code('hello'), /not a version 1 record/],
      [code({ ...good, lesson: 'nope' }), /names a lesson this version does not have \(nope\)/],
      [code({ ...good, frames: [{ ...frame(0), cells: 'xyz' }] }), /a frame is damaged/],
      [code({ ...good, events: [{ atMs: 0, event: { event: 'SHUTDOWN', data: {} } }] }), /an event is damaged/],
      [code({ ...good, diskBytes: 'big' }), /wrong type/],
      [code({ ...good, result: { headline: 1 } }), /result is damaged/],
      ['A'.repeat(2 << 20), /too long/],
      // 64 MiB of zeroes deflate to about 64 KiB: refused while unpacking.
      [Buffer.from(deflateSync(new Uint8Array(64 << 20))).toString('base64url'), /unpacks to more than 8 MiB/],
    ];
    for (const [c, why] of cases) {
      let err: unknown;
      try {
        decodeRecord(c);
      } catch (e) {
        err = e;
      }
      expect(err, String(why)).toBeInstanceOf(RecordError);
      expect((err as Error).message).toMatch(/^this link does not hold a lesson's run: /);
      expect((err as Error).message).toMatch(why);
    }
  });
});
