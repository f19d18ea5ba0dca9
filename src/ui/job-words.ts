/**
 * The job panel's words, from a job's model: its title, its state line,
 * its progress in figures and the notes under them. Pure functions: the
 * panel (job-panel.ts) writes them into the page.
 */
import { formatSize } from '../util/size.js';
import { failureWords } from './job-ending.js';
import { type JobModel, stuckErrors } from './job-store.js';
import { measuring } from './timeline-scale.js';

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** "mirror0: demo.raw → copy.qcow2", "mirror1: import of URL as disk.img". */
export function jobTitle(job: JobModel): string {
  const n = job.names;
  if (!n) return job.id;
  return n.kind === 'import' ? `${job.id}: import of ${n.source} as ${n.target}` : `${job.id}: ${n.source} → ${n.target}`;
}

/** The state line's words for a job that has not ended. */
export function stateWords(job: JobModel): string {
  const importing = job.names?.kind === 'import';
  switch (job.status) {
    case 'created':
      return 'Starting';
    case 'running':
      return job.ready ? 'In sync, copying new writes' : importing ? 'Importing' : 'Copying';
    case 'ready':
      return importing ? 'Copied, finishing' : 'In sync: Complete to finish';
    case 'paused':
    case 'standby':
      return job.ioStatus === 'nospace' ? 'Paused: out of space' : job.ioStatus === 'failed' ? 'Paused on an error' : 'Paused';
    case 'waiting':
    case 'pending':
      return 'Finishing';
    case 'aborting':
      return 'Stopping';
    default:
      return 'Ended';
  }
}

/**
 * What the state line says after its first words: QMP's status and
 * io-status while the job runs ("— running (io-status ok)"); once it ended,
 * how, in words ("— completed, the target equals the source", "— target
 * write error (ENOSPC)"), never QMP's concluded or null.
 */
export function stateDetail(job: JobModel): string {
  // Until the job reached concluded, its status still shows (an ending's event comes just before).
  const ending = job.done ? job.ending : null;
  if (!ending) return `— ${job.status} (io-status ${job.ioStatus})`;
  const importing = (job.names?.kind ?? job.last?.kind) === 'import';
  if (ending.tone === 'done') return importing ? '— completed, the image is imported' : '— completed, the target equals the source';
  if (ending.tone === 'cancelled') return job.ready ? '— cancelled in sync, not switched to the target' : '— cancelled before READY';
  return `— ${job.lastError ? failureWords(job.lastError) : (job.completedError ?? 'an error')}`;
}

/** The progress bar: how far, in per cent and in words. */
export function progressWords(job: JobModel): { percent: number; valueText: string } {
  const ending = job.done || job.ending ? job.ending : null;
  const offset = job.last?.info.offset ?? 0;
  const len = job.last?.info.len ?? 0;
  const percent = len > 0 ? Math.floor((offset / len) * 100) : job.ready || ending?.tone === 'done' ? 100 : 0;
  return { percent, valueText: `${percent}% (${formatSize(offset)} of ${formatSize(len)})${ending ? `: ${ending.word.toLowerCase()}` : ''}` };
}

/**
 * A guest dirties the disk faster than this job copies it, in background
 * mode: the job cannot converge while the guest writes (the figure it is
 * measured against: the speed limit, or the copy's own rate without one).
 */
export function fallingBehind(job: JobModel): { guestRate: number; copyRate: number } | null {
  const p = job.last;
  if (!p?.guest?.running || p.stats.copyMode !== 'background' || job.ready) return null;
  const copyRate = p.info.speed > 0 ? p.info.speed : job.rate;
  return copyRate > 0 && p.guest.bytesPerSecond >= copyRate ? { guestRate: p.guest.bytesPerSecond, copyRate } : null;
}

/**
 * Throughput over the last seconds, saying what it counts: the bytes of the
 * disk done per second, and of them the data copied where zeroes (read as
 * zero, or known zero and never read) made up part of it. In sync with no
 * guest writing, the job is idle and says so.
 */
export function throughputWords(job: JobModel, stuck: boolean): string {
  const p = job.last;
  if (job.paused || job.done || !p || stuck) return '–';
  if (job.ready && !p.guest?.running) return job.names?.kind === 'import' ? 'finishing' : 'idle: in sync';
  if (measuring(job.recent)) return 'measuring…';
  const rate = Math.max(0, job.rate);
  const zeroes = rate - job.dataRate;
  return rate > 0 && zeroes > rate * 0.01 ? `${formatSize(rate)}/s (${formatSize(job.dataRate)}/s data, ${formatSize(zeroes)}/s zeroes)` : `${formatSize(rate)}/s`;
}

/** The figures under the bar, label and value; `now` is Date.now(). */
export function statRows(job: JobModel, now: number): [string, string][] {
  const p = job.last;
  const offset = p?.info.offset ?? 0;
  const len = p?.info.len ?? 0;
  const stuck = stuckErrors(job, now);
  const rows: [string, string][] = [
    ['Copied', `${formatSize(offset)} of ${formatSize(len)}`],
    ['Dirty', p ? formatSize(p.stats.dirtyBytes) : '–'],
    ['In flight', p ? `${p.stats.inFlightOps} ops, ${formatSize(p.stats.inFlightBytes)}` : '–'],
    ['Throughput', throughputWords(job, Boolean(stuck))],
    [
      'ETA',
      stuck
        ? 'none while the error lasts'
        : fallingBehind(job)
          ? 'none while the guest writes faster than the copy'
        : job.done || job.paused
          ? '–'
          : job.ready
            ? job.names?.kind === 'import'
              ? 'finishing'
              : 'ready: Complete to finish'
            : job.rate > 0
              ? formatDuration((len - offset) / job.rate)
              : '–',
    ],
    ['io-status', job.ioStatus],
    // Known from the job's first progress (until then the form's limit may not have reached it).
    ['Speed limit', !p ? '–' : p.info.speed > 0 ? `${formatSize(p.info.speed)}/s` : 'none'],
  ];
  if (p?.guest?.running) rows.push(['Guest', `${p.guest.writes} writes, ${formatSize(p.guest.bytesWritten)}`]);
  return rows;
}

/** What the figures alone do not say: a job that cannot converge, a len past the disk's size. */
export function jobNote(job: JobModel, now: number): string {
  const p = job.last;
  const len = p?.info.len ?? 0;
  const stuck = stuckErrors(job, now);
  const notes: string[] = [];
  if (stuck) {
    notes.push(
      `This job cannot converge while the error lasts: under ignore the failed range stays dirty and is retried (${stuck} errors so far). Remove the fault (or fix the disk) and it catches up.`,
    );
  }
  const behind = fallingBehind(job);
  if (behind) {
    notes.push(
      `The guest writes ${formatSize(behind.guestRate)}/s, faster than this job copies (${formatSize(behind.copyRate)}/s) in background mode: it cannot converge while the guest writes. Stop the guest, lift the speed limit, or use copy-mode write-blocking.`,
    );
  }
  if (p?.stats.copyMode === 'write-blocking' && p.guest?.running && p.info.speed > 0 && job.rate > p.info.speed) {
    notes.push(
      `Throughput passes the speed limit: in write-blocking mode each guest write is copied as it is written, at the guest's pace; the limit holds back only the background copy.`,
    );
  }
  const disk = p ? p.stats.nbChunks * p.stats.granularity : 0;
  if (p && disk > 0 && len > disk) {
    notes.push(`len (${formatSize(len)}) is past the disk's size (${formatSize(disk)}): every write to a chunk already copied adds its bytes to the work again, as QEMU's progress counts them.`);
  }
  return notes.join(' ');
}

/** The Cancel button's hint: what it does in this state. */
export function cancelHint(job: JobModel): string {
  return job.paused ? 'Paused: cancels at once, as QMP job-cancel (a soft cancel of a paused job is refused)' : 'Before READY: stops, leaving the target as it is. In sync: finishes the copy without switching over';
}
