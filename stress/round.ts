/**
 * One round of the soak: a fresh source, `diskmirror mirror --qmp` onto a
 * new target, chaos, the job completed, the target checked.
 *
 * The chaos, at random moments: a guest writes to the source through the
 * job (x-source-write: anywhere, across a cluster boundary, or into
 * clusters a qcow2 overlay does not hold yet while its backing file does);
 * fault rules are added and removed on both sides (EIO once or for a
 * while, ENOSPC until "space is freed", source flushes failing); the job is
 * paused and resumed, its speed changed, it is cancelled (soft or forced)
 * and started again, or its process is killed with SIGKILL and started
 * again with --resume. A job paused by an error is resumed once its faults
 * are gone (or sooner, to meet them again).
 *
 * Half the rounds also plan two or three kills before the completion, each
 * the same way: the job sometimes catches up first (READY), the guest falls
 * quiet (a checkpoint lands, and the next write is the first after it),
 * writes into clusters the overlay does not hold yet, falls quiet again
 * while the job copies what it wrote and a checkpoint (a second's, a
 * pause's) may call it clean, and the process is killed; sometimes while a
 * last guest write is still under way. Every resumed process
 * meets faults on both sides from its first requests (injected on its
 * command line, or added as soon as its monitor answers), most often
 * removed again around its job-resume.
 *
 * After every kill, before the resume, the images are looked at as the
 * crash left them: `qemu-img check` may find leaked clusters, never
 * corruption, and `qemu-img map` tells which clusters acknowledged guest
 * writes had allocated the kill took back (unflushed, the source then reads
 * from its backing file there: the mirror must converge on that).
 *
 * A round ends with the faults removed, the job completed, and the target
 * checked: `qemu-img compare` identical to the source and, for qcow2,
 * `qemu-img check` clean. A resume refused because a guest wrote after the
 * last checkpoint is what the design allows: the round deletes the
 * checkpoint and mirrors again from the start, as the refusal says.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestPlacer, type GuestWrite, type Placement } from './guest.js';
import { checkImage, compareImages, describeMap, type ImageSpec, makeSource, readMap } from './images.js';
import { MirrorProcess } from './qmp-client.js';

const BIN = fileURLToPath(new URL('../../../bin/diskmirror.js', import.meta.url));
const MiB = 1 << 20;
const KiB = 1024;

export type Policy = 'ignore' | 'stop' | 'enospc';
export type Side = 'source' | 'target';
type CopyMode = 'background' | 'write-blocking';

/** What a soak did, summed over its rounds. */
export interface Figures {
  rounds: number;
  qcow2Rounds: number;
  writeBlockingRounds: number;
  /** Rounds whose job was killed two or more times before it completed. */
  multiKillRounds: number;
  policies: Record<Side, Record<Policy, number>>;
  faults: number;
  /** Fault rules a resumed process met from its first requests. */
  resumeFaults: number;
  errors: number;
  kills: number;
  resumes: number;
  resumesRefused: number;
  /** Kills before the first checkpoint: a fresh job took over. */
  noCheckpoint: number;
  restarts: number;
  cancels: number;
  pauses: number;
  guestWrites: number;
  /** Guest writes into clusters only the backing file held. */
  gapWrites: number;
  /** Guest writes touching two clusters or more. */
  crossWrites: number;
  /** Guest writes under way when their process was killed, never answered. */
  cutOffWrites: number;
  /** Clusters acknowledged guest writes allocated in the overlay that a kill took back. */
  takenBack: number;
  /** Images `qemu-img check` found leaking clusters after a kill. */
  leaksAfterKill: number;
  bytesMirrored: number;
}

export function newFigures(): Figures {
  const byPolicy = () => ({ ignore: 0, stop: 0, enospc: 0 });
  return {
    rounds: 0, qcow2Rounds: 0, writeBlockingRounds: 0, multiKillRounds: 0, policies: { source: byPolicy(), target: byPolicy() },
    faults: 0, resumeFaults: 0, errors: 0, kills: 0, resumes: 0, resumesRefused: 0, noCheckpoint: 0, restarts: 0, cancels: 0, pauses: 0,
    guestWrites: 0, gapWrites: 0, crossWrites: 0, cutOffWrites: 0, takenBack: 0, leaksAfterKill: 0, bytesMirrored: 0,
  };
}

export interface RoundPlan extends ImageSpec {
  policies: Record<Side, Policy>;
  copyMode: CopyMode;
  /** Kills planned before the completion (chaos may add more); 0 for a round of chaos alone. */
  plannedKills: number;
  /** Seconds of chaos, in all. */
  seconds: number;
}

/** A round's choices, drawn from its own sequence. */
export function drawPlan(rand: () => number, secondsLeft: number): RoundPlan {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const policies: Policy[] = ['ignore', 'stop', 'enospc'];
  const kind = pick(['qcow2-backing', 'qcow2-backing', 'raw'] as const);
  const size = pick([4, 8, 12]) * MiB + pick([0, 512, 64 * KiB]);
  const source = pick(policies);
  const target = pick(policies);
  const clusterBytes = pick([64 * KiB, 64 * KiB, 4 * KiB, 32 * KiB]);
  const backingClusterBytes = pick([64 * KiB, 64 * KiB, 4 * KiB, 128 * KiB]);
  const copyMode = pick(['background', 'background', 'write-blocking'] as const);
  const plannedKills = rand() < 0.5 ? pick([2, 2, 3]) : 0;
  const seconds = plannedKills ? 1 + rand() * 3 : 1 + rand() * 4;
  const room = Math.max(0.5, secondsLeft);
  return {
    kind,
    size,
    // A raw image's writes straddle the job's default granularity.
    clusterBytes: kind === 'raw' ? 64 * KiB : clusterBytes,
    backingClusterBytes,
    policies: { source, target },
    copyMode,
    // Each planned kill takes a few seconds of quiet: none when the soak is nearly over.
    plannedKills: room < 6 ? 0 : plannedKills,
    seconds: Math.min(seconds, room),
  };
}

export class SoakFailure extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Round {
  private proc!: MirrorProcess;
  private device = 'mirror0';
  private rules: string[] = [];
  private readonly log: string[] = [];
  private readonly args: string[];
  private readonly src: string;
  private readonly dst: string;
  private readonly base: string;
  private readonly checkpoint: string;
  private readonly guest: GuestPlacer;
  /** Acknowledged guest writes, with the process that took each (1 is the first). */
  private readonly writes: (GuestWrite & { pattern: number; process: number })[] = [];
  private processes = 0;
  private kills = 0;

  constructor(
    private readonly n: number,
    private readonly rand: () => number,
    dir: string,
    private readonly figures: Figures,
    private readonly plan: RoundPlan,
  ) {
    const ext = plan.kind === 'raw' ? 'raw' : 'qcow2';
    this.src = join(dir, `src.${ext}`);
    this.dst = join(dir, `dst.${ext}`);
    this.base = join(dir, 'base.qcow2');
    this.checkpoint = `${this.dst}.dmcheckpoint`;
    this.args = [
      '-f', ext, '-O', ext,
      '--on-source-error', plan.policies.source, '--on-target-error', plan.policies.target,
      '--copy-mode', plan.copyMode,
      '--buf-size', `${this.pick([256, 1024, 4096])}K`,
      '--speed', `${this.pick([4, 16, 64])}M`,
      '--checkpoint-interval', '1',
      this.src, this.dst,
    ];
    this.guest = new GuestPlacer(plan.size, plan.clusterBytes, plan.kind === 'qcow2-backing', rand);
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.rand() * items.length)]!;
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  private note(what: string): void {
    this.log.push(`${new Date().toISOString().slice(11, 23)} ${what}`);
  }

  private get layered(): boolean {
    return this.plan.kind === 'qcow2-backing';
  }

  private async start(resume: boolean, inject: string[] = []): Promise<void> {
    this.processes++;
    const args = [...(resume ? ['--resume'] : []), ...inject.flatMap((rule) => ['--inject', rule]), ...this.args];
    this.proc = new MirrorProcess(BIN, args, (e) => {
      if (e.event === 'JOB_STATUS_CHANGE') this.note(`  status ${String(e.data.status)}`);
      else if (e.event === 'BLOCK_JOB_ERROR') this.note(`  BLOCK_JOB_ERROR ${String(e.data.operation)} ${String(e.data.action)}`);
    });
    const answer = await this.proc.command('qmp_capabilities');
    if (!('return' in answer)) {
      const code = await this.proc.exit(30_000, 'a refused start');
      const said = this.proc.stderr.join(' | ');
      // A guest wrote the source after the last checkpoint (its stamps changed, or its mark says a write was under way): resume is refused, by design.
      if (resume && /cannot resume: (the source .* (was modified .* after the checkpoint|changed: )|a guest was writing the source .* after the last checkpoint)/.test(said)) {
        this.note(`resume refused: ${said}`);
        this.figures.resumesRefused++;
        // As the refusal says: delete the checkpoint and mirror again from the start.
        rmSync(this.checkpoint, { force: true });
        await this.start(false, inject);
        return;
      }
      throw new SoakFailure(`the mirror did not start (exit ${code}): ${said}`);
    }
    this.rules = [...inject];
    const jobs = await this.proc.command('query-block-jobs');
    this.device = 'return' in jobs ? String((jobs.return as { device: string }[])[0]?.device ?? 'mirror0') : 'mirror0';
    this.note(`process ${this.processes} ${resume ? 'started with --resume' : 'started'} as ${this.device}${inject.length ? `, faults injected: ${inject.join(' ')}` : ''}`);
  }

  private async ask(execute: string, args: Record<string, unknown>): Promise<boolean> {
    const a = await this.proc.command(execute, args);
    this.note(`${execute} ${JSON.stringify(args)} -> ${'return' in a ? 'ok' : 'error' in a ? a.error.desc : 'gone'}`);
    return 'return' in a;
  }

  private cmd(execute: string, args?: Record<string, unknown>): Promise<boolean> {
    return this.ask(execute, { device: this.device, ...args });
  }

  /** A job verb, as block-job-VERB (by device) or as job-VERB (by id). */
  private verb(name: 'pause' | 'resume' | 'complete'): Promise<boolean> {
    return this.rand() < 0.5 ? this.cmd(`block-job-${name}`) : this.ask(`job-${name}`, { id: this.device });
  }

  private async removeFaults(): Promise<void> {
    if (this.rules.length) await this.cmd('fault-remove', { all: true });
    this.rules.length = 0;
  }

  /** A fault the side's policy answers without failing the job; `enospcOnce`: a source read failing once for lack of space. */
  private faultRule(side: Side, enospcOnce = false): string {
    const errno = enospcOnce || this.plan.policies[side] === 'enospc' ? 'ENOSPC' : this.pick(['EIO', 'EIO', 'ENOSPC']);
    const op = enospcOnce ? 'read' : side === 'source' ? this.pick(['read', 'read', 'read', 'flush']) : this.pick(['write', 'write', 'flush']);
    const at = Math.floor(this.rand() * (this.plan.size / (64 * KiB))) * 64 * KiB;
    const range = op === 'flush' ? '0-' : this.pick([`${at}+${this.int(1, 16) * 64 * KiB}`, `${at}-`, '0-']);
    return `${side}:${op}:${errno}:${range}${enospcOnce || this.rand() < 0.4 ? ':once' : ''}`;
  }

  private stopped(): boolean {
    return this.proc.status === 'paused' || this.proc.status === 'standby';
  }

  private stoppedByError(): boolean {
    return this.stopped() && this.proc.events.at(-1)?.event !== undefined && this.lastIoStatus() !== 'ok';
  }

  private lastIoStatus(): string {
    for (let i = this.proc.events.length - 1; i >= 0; i--) {
      const e = this.proc.events[i]!;
      if (e.event === 'BLOCK_JOB_ERROR') return 'failed';
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'running') return 'ok';
    }
    return 'ok';
  }

  /** A guest write, sent: its answer, and what to call once the job acknowledged it. */
  private sendGuestWrite(placement: Placement): { answer: Promise<boolean>; acknowledged: () => void } {
    const w = this.guest.pick(placement);
    const pattern = this.int(1, 255);
    this.note(`guest write (${w.placement}, ${this.guest.clusters(w)} cluster${this.guest.clusters(w) > 1 ? 's' : ''})`);
    return { answer: this.cmd('x-source-write', { offset: w.offset, bytes: w.bytes, pattern }), acknowledged: () => this.acknowledged(w, pattern) };
  }

  private async guestWrite(placement: Placement): Promise<void> {
    const sent = this.sendGuestWrite(placement);
    if (await sent.answer) sent.acknowledged();
  }

  private acknowledged(w: GuestWrite, pattern: number): void {
    this.figures.guestWrites++;
    if (w.placement === 'backing-gap') this.figures.gapWrites++;
    if (this.guest.clusters(w) > 1) this.figures.crossWrites++;
    this.guest.landed(w);
    this.writes.push({ ...w, pattern, process: this.processes });
  }

  /** Where chaos writes: anywhere at random, as a guest; across clusters and into backing gaps as often. */
  private chaosPlacement(): Placement {
    const r = this.rand();
    return r < 0.5 ? 'anywhere' : r < 0.75 ? 'boundary' : 'backing-gap';
  }

  /** SIGKILL, then --resume; `inFlight`: a guest write sent just before, answered or not when the process went. */
  private async kill(why: string, inFlight?: ReturnType<Round['sendGuestWrite']>): Promise<void> {
    this.note(`SIGKILL (${why})`);
    this.proc.kill('SIGKILL');
    this.figures.kills++;
    this.kills++;
    if (inFlight) {
      if (await inFlight.answer) inFlight.acknowledged();
      else this.figures.cutOffWrites++;
    }
    await this.restart(true, 'SIGKILL');
  }

  /**
   * The images as a kill left them, before anything opens them again:
   * leaked clusters are allowed, corruption is not; which clusters guest
   * writes had allocated the kill took back.
   */
  private afterKill(): void {
    if (!this.layered) return;
    const lost = this.guest.load(readMap(this.src));
    if (lost) {
      this.figures.takenBack += lost;
      this.note(`the kill took back ${lost} cluster(s) guest writes had allocated in the overlay (they read from the backing file again)`);
    }
    for (const [side, image] of [['source', this.src], ['target', this.dst]] as const) {
      if (!existsSync(image)) continue;
      const r = checkImage(image);
      if (r.state === 'clean') continue;
      if (r.state === 'leaks') {
        this.figures.leaksAfterKill++;
        this.note(`after the kill the ${side} leaks clusters: ${r.output}`);
        continue;
      }
      throw new SoakFailure(`after a SIGKILL, qemu-img check finds the ${side} ${r.state}: ${r.output}`);
    }
  }

  /** Waits for the process to end; a kill or an ending is followed by a new start. */
  private async restart(resume: boolean, after: string): Promise<void> {
    const code = await this.proc.exit(30_000, after);
    this.countErrors();
    this.note(`process ended: ${code}${this.proc.stderr.length ? `; it said: ${this.proc.stderr.slice(-3).join(' | ')}` : ''}`);
    if (after === 'SIGKILL') {
      if (code !== 'SIGKILL') throw new SoakFailure(`the mirror had exited by itself (${code}) before it was killed: ${this.proc.stderr.slice(-3).join(' | ')}`);
      this.afterKill();
    }
    if (resume && !existsSync(this.checkpoint)) {
      // Killed before its first checkpoint: nothing to resume, a fresh job takes over the target.
      resume = false;
      this.figures.noCheckpoint++;
    }
    if (!resume) {
      this.figures.restarts++;
      await this.start(false);
      return;
    }
    this.figures.resumes++;
    // The resumed job meets faults on both sides from its first requests: injected on its command line, or added as soon as its monitor answers.
    const faults = this.rand() < 0.7 ? this.resumeFaultRules() : [];
    const injected = faults.length > 0 && this.rand() < 0.5;
    await this.start(true, injected ? faults : []);
    if (faults.length === 0) return;
    if (!injected) {
      for (const rule of faults) if (await this.cmd('fault-add', { rule })) this.rules.push(rule);
    }
    this.figures.faults += this.rules.length;
    this.figures.resumeFaults += this.rules.length;
    await sleep(this.int(0, 400));
    // Most often the faults go around the job's resume; otherwise the chaos meets them.
    if (this.rand() < 0.75) {
      if (this.rand() < 0.5) await this.verb('resume');
      await this.removeFaults();
      if (this.stopped()) await this.verb('resume');
    }
  }

  /** One to three rules for a resumed job, the first on the source (often a read failing once with ENOSPC), the others on either side. */
  private resumeFaultRules(): string[] {
    const rules = [this.faultRule('source', this.rand() < 0.5)];
    for (let i = this.int(0, 2); i > 0; i--) rules.push(this.faultRule(this.rand() < 0.6 ? 'target' : 'source'));
    return rules;
  }

  /**
   * After a cancel, until the job has gone: a job the cancel finds stopped
   * by an error (a soft cancel after READY still flushes) waits for a
   * resume, as QEMU's; the faults go and it is resumed; after 20 s a forced
   * cancel ends it.
   */
  private async windDown(): Promise<void> {
    const started = Date.now();
    let forced = false;
    while (this.proc.status !== 'null') {
      if (Date.now() - started > 60_000) throw new SoakFailure(`a cancelled job did not end within 60 s (status ${this.proc.status})`);
      if (this.stopped()) {
        await this.removeFaults();
        await this.cmd('block-job-resume');
      }
      if (!forced && Date.now() - started > 20_000) {
        forced = await this.cmd('block-job-cancel', { force: true });
      }
      await this.proc.waitEvent((e) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null', 200);
    }
  }

  private async chaos(until: number): Promise<void> {
    while (Date.now() < until) {
      const r = this.rand();
      if (r < 0.3) {
        await this.guestWrite(this.chaosPlacement());
      } else if (r < 0.42) {
        const rule = this.faultRule(this.rand() < 0.5 ? 'source' : 'target');
        if (await this.cmd('fault-add', { rule })) {
          this.rules.push(rule);
          this.figures.faults++;
        }
      } else if (r < 0.52) {
        // Space is freed, a disk comes back: the faults go, a job stopped by one resumes.
        await this.removeFaults();
        if (this.stopped()) await this.verb('resume');
      } else if (r < 0.6) {
        if (this.stopped()) await this.verb('resume');
        else if (await this.verb('pause')) this.figures.pauses++;
      } else if (r < 0.66) {
        await this.cmd('block-job-set-speed', { speed: this.pick([0, 2, 8, 32]) * MiB });
      } else if (r < 0.69) {
        const force = this.rand() < 0.5;
        if (await this.cmd('block-job-cancel', { force })) {
          this.figures.cancels++;
          await this.windDown();
          await this.proc.command('quit');
          await this.restart(false, `a ${force ? 'forced' : 'soft'} cancel and quit`);
        }
      } else if (r < 0.73) {
        // Often after a quiet second, so a checkpoint taken after the last guest write can be resumed.
        if (this.rand() < 0.6) await sleep(1300);
        await this.kill('chaos');
      } else if (this.stoppedByError() && this.rand() < 0.5) {
        await this.verb('resume');
      }
      await sleep(this.int(5, 120));
    }
  }

  /**
   * A planned kill: sometimes the job catches up first (READY, it copies
   * only what the guest writes); the guest falls quiet long enough for a
   * checkpoint (so its next write is the first after one, and asks for the
   * next), writes into clusters the overlay does not hold yet, and falls
   * quiet again while the job copies that and a checkpoint may call it
   * clean (one after the copy's second, or a pause's); then the process
   * is killed.
   */
  private async crashAfterWrites(): Promise<void> {
    if (this.rand() < 0.5 && !this.stopped()) {
      await this.cmd('block-job-set-speed', { speed: 0 });
      await this.proc.waitEvent((e) => e.event === 'BLOCK_JOB_READY', 3000);
    }
    if (this.rand() < 0.7) await sleep(this.int(1100, 1800));
    const placement = (): Placement => {
      const r = this.rand();
      return r < 0.7 ? 'backing-gap' : r < 0.9 ? 'boundary' : 'anywhere';
    };
    for (let i = this.pick([1, 1, 2, 3]); i > 0; i--) await this.guestWrite(placement());
    if (this.rand() < 0.2) {
      // The guest is writing when the process dies: its write may land whole, in part or not at all, unanswered.
      const sent = this.sendGuestWrite(placement());
      await sleep(this.int(0, 8));
      await this.kill('planned, a guest write under way', sent);
      return;
    }
    if (this.rand() < 0.5) {
      await sleep(this.pick([0, 50, 200, 500]));
      if (!this.stopped() && (await this.verb('pause'))) this.figures.pauses++;
      await sleep(this.int(50, 400));
      await this.verb('resume');
    }
    await sleep(this.pick([0, 100, 400, 900, 1300, 1700, 2300]));
    await this.kill('planned');
  }

  /** Faults gone, job resumed and completed; the process ends by itself (exit 0). */
  private async finish(): Promise<void> {
    await this.cmd('fault-remove', { all: true });
    this.rules.length = 0;
    await this.cmd('block-job-set-speed', { speed: 0 });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (Date.now() > deadline) throw new SoakFailure(`no READY within 120 s after the faults were removed (status ${this.proc.status})`);
      if (this.stopped()) await this.verb('resume');
      const ready = await this.proc.waitEvent((e) => e.event === 'BLOCK_JOB_READY', 250);
      const ended = this.proc.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED');
      if (ended) throw new SoakFailure(`the job ended by itself: ${JSON.stringify(ended)}`);
      if (ready && this.proc.status === 'ready') break;
    }
    await this.verb('complete');
    const done = await this.proc.waitEvent((e) => e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED', 60_000);
    if (!done) throw new SoakFailure(`no BLOCK_JOB_COMPLETED within 60 s of the job's completion asked (status ${this.proc.status})`);
    if (done.event !== 'BLOCK_JOB_COMPLETED' || done.data.error) throw new SoakFailure(`the job ended with ${JSON.stringify(done)}`);
    this.figures.bytesMirrored += Number(done.data.len ?? 0);
    this.proc.closeInput();
    const code = await this.proc.exit(30_000, 'the job completed and its input closed');
    this.countErrors();
    if (code !== 0) throw new SoakFailure(`the mirror exited ${code} after completing: ${this.proc.stderr.join(' | ')}`);
  }

  private verify(): void {
    const diff = compareImages(this.src, this.dst);
    if (diff) throw new SoakFailure(`LOSS: the target differs from the source after BLOCK_JOB_COMPLETED: ${diff.said}${diff.offset === null ? '' : `\n${this.around(diff.offset)}`}`);
    if (this.plan.kind === 'raw') return;
    const r = checkImage(this.dst);
    if (r.state !== 'clean') throw new SoakFailure(`the target is not clean (${r.state}): ${r.output}`);
  }

  /** What both images hold around a differing offset, and the guest writes that touched it. */
  private around(offset: number): string {
    const cs = this.plan.clusterBytes;
    const from = Math.max(0, Math.floor(offset / cs) * cs - cs);
    const bytes = 3 * cs;
    const touching = this.writes.filter((w) => w.offset < offset + cs && w.offset + w.bytes > offset - cs);
    return [
      `qemu-img map of the source around ${offset}:`,
      describeMap(this.src, from, bytes),
      `qemu-img map of the target around ${offset}:`,
      describeMap(this.dst, from, bytes),
      `acknowledged guest writes within a cluster of it (process 1 is the first started, each kill or restart starts the next):`,
      ...touching.map((w) => `  ${JSON.stringify(w)}`),
    ].join('\n');
  }

  async run(): Promise<void> {
    const { plan } = this;
    makeSource(plan, { src: this.src, base: this.base }, this.rand);
    if (this.layered) this.guest.load(readMap(this.src));
    this.note(
      `round ${this.n}: ${plan.kind}, ${plan.size} bytes${this.layered ? `, clusters ${plan.clusterBytes} over ${plan.backingClusterBytes}` : ''}, ` +
        `on-source-error ${plan.policies.source}, on-target-error ${plan.policies.target}, copy-mode ${plan.copyMode}, ${plan.plannedKills} planned kills, ${plan.seconds.toFixed(1)} s of chaos`,
    );
    await this.start(false);
    try {
      const segment = (plan.seconds * 1000) / (plan.plannedKills + 1);
      for (let i = 0; i < plan.plannedKills; i++) {
        await this.chaos(Date.now() + segment);
        await this.crashAfterWrites();
      }
      await this.chaos(Date.now() + segment);
      await this.finish();
    } catch (err) {
      this.proc.kill('SIGKILL');
      throw err;
    }
    this.verify();
    const f = this.figures;
    f.rounds++;
    if (this.layered) f.qcow2Rounds++;
    if (plan.copyMode === 'write-blocking') f.writeBlockingRounds++;
    if (this.kills >= 2) f.multiKillRounds++;
    f.policies.source[plan.policies.source]++;
    f.policies.target[plan.policies.target]++;
  }

  private countErrors(): void {
    this.figures.errors += this.proc.events.filter((e) => e.event === 'BLOCK_JOB_ERROR').length;
  }

  get history(): string {
    return this.log.slice(-150).join('\n');
  }
}
