/**
 * The engine as the page's worker runs a lesson's or a challenge's job, in
 * this process: the demo image made as the app makes it, the job launched
 * with the armed faults and guest at the page's checkpoint interval, its
 * events to one listener, and the checkpoints it stored, so a kill can be
 * played as a closed tab (resume from the last one stored before it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileStore } from '../../src/block/node-store.js';
import { createInStore, openChain, type OpenedImage } from '../../src/format/image-access.js';
import { sameContent } from '../../src/format/same-content.js';
import type { LessonSetup } from '../../src/lessons/lesson.js';
import { MirrorControl } from '../../src/mirror/control.js';
import type { AnyQmpEvent } from '../../src/qapi/events.js';
import { parseFaultSpec } from '../../src/qapi/faults.js';
import { launchMirror } from '../../src/mirror/launch.js';
import type { MirrorJob } from '../../src/mirror/mirror-job.js';
import type { Checkpoint } from '../../src/mirror/types.js';
import { DEMO_IMAGE_BYTES, writeDemoImage } from '../../src/worker/demo.js';
import { SimulatedGuest } from '../../src/worker/guest.js';
import { CHECKPOINT_INTERVAL_SECONDS } from '../../src/worker/intervals.js';

export const JOB = 'lesson0';
export { DEMO_IMAGE_BYTES };

export type JobSetup = Pick<LessonSetup, 'target' | 'targetFormat' | 'options' | 'faults' | 'guest'>;

export class EngineSession {
  control = new MirrorControl();
  job!: MirrorJob;
  target!: OpenedImage;
  guest: SimulatedGuest | null = null;
  /** Every checkpoint the job stored, in order. */
  readonly saved: Checkpoint[] = [];

  private constructor(
    private readonly dir: string,
    private readonly store: NodeFileStore,
    readonly source: OpenedImage,
    private readonly setup: JobSetup,
    private readonly onEvent: (e: AnyQmpEvent) => void,
  ) {}

  static async open(name: string, setup: JobSetup, onEvent: (e: AnyQmpEvent) => void): Promise<EngineSession> {
    const dir = mkdtempSync(join(tmpdir(), `diskmirror-${name}-`));
    const store = new NodeFileStore(dir);
    const made = await createInStore(store, 'demo.raw', { format: 'raw', size: DEMO_IMAGE_BYTES }, { replace: false });
    await writeDemoImage(made.image);
    await made.image.flush();
    await made.publish();
    await made.image.close();
    const source = await openChain(store, 'demo.raw', { readOnly: false });
    return new EngineSession(dir, store, source, setup, onEvent);
  }

  /** Starts the job (again from `resumeFrom`, as a resume after a kill: no faults, no guest). */
  async start(options = this.setup.options, resumeFrom?: Checkpoint): Promise<void> {
    const setup = this.setup;
    const launched = await launchMirror({
      store: this.store,
      source: { image: this.source.image, name: 'demo.raw', opened: this.source },
      target: setup.target,
      ...(setup.targetFormat ? { targetFormat: setup.targetFormat } : {}),
      options: { ...options, id: JOB },
      backingName: (b) => b,
      faults: resumeFrom ? [] : setup.faults.map(parseFaultSpec),
      checkpointer: () => ({ save: async (c) => void this.saved.push(structuredClone(c)), markSourceWriting: async () => {}, remove: async () => {} }),
      checkpointIntervalSeconds: CHECKPOINT_INTERVAL_SECONDS,
      onExisting: async () => (resumeFrom ? { options: { ...options, id: JOB }, resume: { bitmap: resumeFrom.bitmap } } : null),
    });
    const job = launched.job;
    this.job = job;
    this.target = launched.target;
    this.control = new MirrorControl();
    this.control.add(job, launched.faults);
    job.on((e) => {
      if (this.job === job) this.onEvent(e);
    }, { replay: true });
    job.start();
    if (setup.guest && !resumeFrom) {
      this.guest = new SimulatedGuest(job, setup.guest);
      this.guest.start();
    }
  }

  /** The process is gone with no last word (a closed tab), then the job is resumed from the checkpoint stored before. */
  async killAndResume(): Promise<void> {
    // halt() stops the I/O here; the checkpoint it stores on its way out is not the one resumed from.
    const last = this.saved.at(-1)!;
    await this.guest?.stop();
    await this.job.halt();
    await this.target.image.close();
    await this.start(this.setup.options, last);
  }

  /** Whether the target shows the bytes the source shows (through the job's own handles, as the page's worker compares before it lets go). */
  sameContent(): Promise<boolean> {
    return sameContent(this.source.image, this.target.image);
  }

  async close(): Promise<void> {
    await this.guest?.stop();
    await this.target?.image.close().catch(() => {});
    await this.source.image.close().catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}
