/**
 * A pretend guest: writes random data to a job's source at a chosen rate,
 * through the job (so background mode dirties the bitmap and write-blocking
 * mode writes the target too). It is how the app shows a job catching up.
 */
import type { MirrorJob } from '../mirror/mirror-job.js';

const TICK_MS = 50;
const MAX_WRITE_BYTES = 64 << 10;

export interface GuestStats {
  running: boolean;
  bytesPerSecond: number;
  writes: number;
  bytesWritten: number;
  lastError?: string;
}

/** The page's simulated guest (not the qcow2 write path, format/qcow2/guest-write.ts's Qcow2DataWriter). */
export class SimulatedGuest {
  private stopped = true;
  /** Each start runs its own loop; an older loop ends when it sees a newer generation. */
  private generation = 0;
  private stats: GuestStats;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly job: MirrorJob,
    bytesPerSecond: number,
  ) {
    this.stats = { running: false, bytesPerSecond, writes: 0, bytesWritten: 0 };
  }

  get state(): GuestStats {
    return { ...this.stats };
  }

  setRate(bytesPerSecond: number): void {
    if (!Number.isSafeInteger(bytesPerSecond) || bytesPerSecond <= 0) {
      throw new RangeError(`guest write rate ${bytesPerSecond}: must be a positive number of bytes per second`);
    }
    this.stats.bytesPerSecond = bytesPerSecond;
  }

  start(): void {
    if (!this.stopped) return;
    this.setRate(this.stats.bytesPerSecond);
    this.stopped = false;
    this.stats.running = true;
    const generation = ++this.generation;
    this.loop = this.run(generation);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async run(generation: number): Promise<void> {
    const size = this.job.size;
    const buffer = new Uint8Array(MAX_WRITE_BYTES);
    const mine = () => !this.stopped && generation === this.generation;
    while (mine()) {
      const tickStart = performance.now();
      let budget = Math.max(512, Math.round((this.stats.bytesPerSecond * TICK_MS) / 1000));
      while (budget > 0 && mine() && size > 0) {
        const bytes = Math.min(budget, 512 * (1 + Math.floor(Math.random() * (MAX_WRITE_BYTES / 512))), size);
        const offset = Math.floor(Math.random() * Math.floor((size - bytes) / 512 + 1)) * 512;
        const data = buffer.subarray(0, bytes);
        crypto.getRandomValues(data);
        try {
          await this.job.sourceWrite(offset, data);
          this.stats.writes++;
          this.stats.bytesWritten += bytes;
        } catch (err) {
          // The job finished (or the source refuses writes): the guest stops.
          this.stats.lastError = (err as Error).message;
          this.stopped = true;
        }
        budget -= bytes;
      }
      const rest = TICK_MS - (performance.now() - tickStart);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    }
    if (generation === this.generation) this.stats.running = false;
  }
}
