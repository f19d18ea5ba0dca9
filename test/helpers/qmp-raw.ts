/**
 * A QMP peer over raw streams, for tests that decide when the monitor's
 * answers are read: it keeps only the tail of what it heard (a million
 * answers are not kept), waits for a marker, and floods the monitor with
 * commands while nobody reads.
 */
import { readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { expect } from 'vitest';

export const MiB = 1 << 20;

/** A process's peak resident memory so far (VmHWM), in bytes; 0 once it has gone. */
export function peakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** How much of what was heard is kept for markers asked for later. */
const TAIL_CHARS = 64 * 1024;

export class RawQmp {
  /** The end of what was heard: markers asked for after they came are found here. */
  private tail = '';
  private waiters: { marker: string; resolve: () => void }[] = [];
  /** Whether the monitor closed its side (end), and whether the stream has closed. */
  ended = false;
  closed = false;
  /** Settles when the monitor closes its side or the stream closes. */
  readonly hungUp: Promise<void>;

  constructor(
    readonly input: Writable,
    readonly output: Readable,
  ) {
    input.on('error', () => {});
    output.setEncoding('utf8');
    output.on('data', (chunk: string) => {
      // QEMU puts a space after a colon, diskmirror does not: markers are looked for without it.
      const text = (this.tail + chunk).replace(/": /g, '":');
      this.waiters = this.waiters.filter((w) => {
        if (!text.includes(w.marker)) return true;
        w.resolve();
        return false;
      });
      this.tail = text.slice(-TAIL_CHARS);
    });
    this.hungUp = new Promise((resolve) => {
      output.on('end', () => ((this.ended = true), resolve()));
      output.on('close', () => ((this.closed = true), resolve()));
    });
  }

  /** Everything heard, when little was (the last 64 KiB otherwise), without a space after a colon. */
  get heardSoFar(): string {
    return this.tail;
  }

  /** Resolves once `marker` has been heard (already, in the last 64 KiB, or from now on). */
  heard(marker: string, timeoutMs = 60_000): Promise<void> {
    if (this.tail.includes(marker)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${marker} not heard; the last that was:\n${this.tail.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ marker, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  send(value: unknown): void {
    this.input.write(typeof value === 'string' ? value : JSON.stringify(value));
  }

  /** Sends a command with an id and resolves with its answer. */
  async ask(execute: string, id: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const marker = `"id":"${id}"`;
    const answered = this.heard(marker);
    this.send({ execute, ...(args ? { arguments: args } : {}), id });
    await answered;
    const line = this.tail.split('\n').find((l) => l.includes(marker));
    return JSON.parse(line!) as Record<string, unknown>;
  }

  /**
   * Writes `count` query-jobs while nobody reads the answers, until all are
   * written or the monitor has taken none for 2 s (it stopped reading);
   * notes the monitor's peak memory then; reads again and resolves once the
   * last command is answered.
   */
  async floodUnread(pid: number, count: number): Promise<{ writtenUnread: number; peakUnread: number; peakAfter: number }> {
    const batch = 10_000;
    const command = '{"execute":"query-jobs"}\n'.repeat(batch);
    this.output.pause();
    let written = 0;
    let stalled: () => void = () => {};
    const stall = new Promise<void>((resolve) => (stalled = resolve));
    let timer: NodeJS.Timeout | undefined;
    const last = this.heard('"id":"flood-end"', 600_000);
    const pump = () => {
      clearTimeout(timer);
      while (written < count) {
        written += batch;
        const more = this.input.write(written < count ? command : `${command}{"execute":"query-jobs","id":"flood-end"}\n`);
        if (!more) {
          timer = setTimeout(stalled, 2000);
          this.input.once('drain', pump);
          return;
        }
      }
      stalled();
    };
    pump();
    await stall;
    const writtenUnread = written;
    const peakUnread = peakRss(pid);
    this.output.resume();
    await last;
    return { writtenUnread, peakUnread, peakAfter: peakRss(pid) };
  }
}

/**
 * A million query-jobs while nobody reads: the monitor stops taking them
 * (as QEMU's), stays under 200 MB, and answers them all once read. (Taking
 * them all held every answer: 850 MB after 2.3 million in 15 s; QEMU, which
 * stops reading, stays at 33 MB.)
 */
export async function expectFloodBounded(peer: RawQmp, pid: number): Promise<void> {
  const count = 1_000_000;
  const flood = await peer.floodUnread(pid, count);
  const mib = (bytes: number) => Math.round(bytes / MiB);
  const report = `${flood.writtenUnread} commands taken while unread; peak ${mib(flood.peakUnread)} MiB, then ${mib(flood.peakAfter)} MiB`;
  expect(flood.writtenUnread, report).toBeLessThan(count);
  expect(flood.peakUnread, report).toBeLessThan(200 * MiB);
  expect(flood.peakAfter, report).toBeLessThan(200 * MiB);
}

