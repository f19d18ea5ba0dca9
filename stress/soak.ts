/**
 * The soak: everything at once, for as long as asked, from one seed.
 *
 * Each round mirrors a fresh image with `diskmirror mirror --qmp` (a qcow2
 * over a backing file onto a new qcow2, or raw onto raw) under an error
 * policy per side (ignore, stop or enospc), while a guest writes to the
 * source at random (x-source-write) and, at random moments: fault rules are
 * added and removed on both sides (EIO once, EIO for a while, ENOSPC until
 * "space is freed"), the job is paused and resumed, its speed changed, it is
 * cancelled (soft or forced) and started again, or its process is killed
 * with SIGKILL and started again with --resume. A job paused by an error is
 * resumed once its faults are gone (or sooner, to meet them again). Every
 * round ends with the faults removed, the job completed, and the target
 * checked: `qemu-img compare` identical to the source and, for qcow2,
 * `qemu-img check` clean. The first loss stops the soak (exit 1) with the
 * seed and round that reproduce it.
 *
 *   npm run soak -- --seconds 600 --seed 42      (defaults: 60 s, a seed from the clock)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MirrorProcess, type QmpEvent } from './qmp-client.js';
import { prng } from './prng.js';

const BIN = fileURLToPath(new URL('../../../bin/diskmirror.js', import.meta.url));
const MiB = 1 << 20;
const KiB = 1024;

type Policy = 'ignore' | 'stop' | 'enospc';
type Side = 'source' | 'target';

interface Figures {
  rounds: number;
  faults: number;
  errors: number;
  kills: number;
  resumes: number;
  resumesRefused: number;
  restarts: number;
  cancels: number;
  pauses: number;
  guestWrites: number;
  bytesMirrored: number;
}

class SoakFailure extends Error {}

function parseArgs(argv: string[]): { seconds: number; seed: number; keep: boolean; round: number | null } {
  let seconds = 60;
  let seed = Date.now() % 1_000_000_007;
  let keep = false;
  let round: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a} wants a non-negative number, got ${argv[i] ?? 'nothing'}`);
      return v;
    };
    if (a === '--seconds') seconds = value();
    else if (a === '--seed') seed = Math.floor(value());
    else if (a === '--keep') keep = true;
    else if (a === '--round') round = Math.max(1, Math.floor(value()));
    else throw new Error(`unknown option ${a} (expected --seconds N, --seed S, --round R, --keep)`);
  }
  return { seconds, seed, keep, round };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sh(program: string, args: string[]): string {
  return execFileSync(program, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

class Round {
  private proc!: MirrorProcess;
  private device = 'mirror0';
  private readonly rules: string[] = [];
  private readonly log: string[] = [];
  private readonly args: string[];
  private readonly checkpoint: string;

  constructor(
    private readonly n: number,
    private readonly rand: () => number,
    private readonly dir: string,
    private readonly figures: Figures,
    private readonly kind: 'qcow2-backing' | 'raw',
    private readonly size: number,
    private readonly policies: Record<Side, Policy>,
  ) {
    const ext = kind === 'raw' ? 'raw' : 'qcow2';
    const src = join(dir, `src.${ext}`);
    const dst = join(dir, `dst.${ext}`);
    this.checkpoint = `${dst}.dmcheckpoint`;
    this.args = [
      '-f', ext, '-O', ext,
      '--on-source-error', policies.source, '--on-target-error', policies.target,
      '--buf-size', `${this.pick([256, 1024, 4096])}K`,
      '--speed', `${this.pick([4, 16, 64])}M`,
      '--checkpoint-interval', '1',
      src, dst,
    ];
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

  /** Source images: random data in a few places, over a backing file for qcow2. */
  makeImages(): void {
    const fill = (image: string, fmt: string, count: number) => {
      const cmds: string[] = [];
      for (let i = 0; i < count; i++) {
        const bytes = this.int(1, 64) * 4 * KiB;
        const offset = Math.floor(this.rand() * ((this.size - bytes) / 512)) * 512;
        cmds.push('-c', `write -P ${this.int(1, 255)} ${offset} ${bytes}`);
      }
      sh('qemu-io', ['-f', fmt, ...cmds, image]);
    };
    if (this.kind === 'raw') {
      const src = join(this.dir, 'src.raw');
      sh('qemu-img', ['create', '-q', '-f', 'raw', src, String(this.size)]);
      fill(src, 'raw', 40);
    } else {
      const base = join(this.dir, 'base.qcow2');
      const src = join(this.dir, 'src.qcow2');
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(this.size)]);
      fill(base, 'qcow2', 30);
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', src]);
      fill(src, 'qcow2', 20);
    }
  }

  private async start(resume: boolean): Promise<void> {
    this.proc = new MirrorProcess(BIN, resume ? ['--resume', ...this.args] : this.args);
    const answer = await this.proc.command('qmp_capabilities');
    if (!('return' in answer)) {
      const code = await this.proc.exit(30_000, 'a refused start');
      const said = this.proc.stderr.join(' | ');
      // The source changed after the last checkpoint (a guest write the checkpoint cannot know): resume is refused, by design.
      if (resume && /cannot resume: the source .* (was modified .* after the checkpoint|changed: )/.test(said)) {
        this.note(`resume refused: ${said}`);
        this.figures.resumesRefused++;
        // As the refusal says: delete the checkpoint and mirror again from the start.
        rmSync(this.checkpoint, { force: true });
        await this.start(false);
        return;
      }
      throw new SoakFailure(`the mirror did not start (exit ${code}): ${said}`);
    }
    this.rules.length = 0;
    const jobs = await this.proc.command('query-block-jobs');
    this.device = 'return' in jobs ? String((jobs.return as { device: string }[])[0]?.device ?? 'mirror0') : 'mirror0';
    this.note(`${resume ? 'started with --resume' : 'started'} as ${this.device}`);
  }

  private async cmd(execute: string, args?: Record<string, unknown>): Promise<boolean> {
    const a = await this.proc.command(execute, { device: this.device, ...args });
    this.note(`${execute} ${JSON.stringify(args ?? {})} -> ${'return' in a ? 'ok' : 'error' in a ? a.error.desc : 'gone'}`);
    return 'return' in a;
  }

  /** A fault the side's policy answers without failing the job. */
  private faultRule(side: Side): string {
    const errno = this.policies[side] === 'enospc' ? 'ENOSPC' : this.pick(['EIO', 'EIO', 'ENOSPC']);
    const op = side === 'source' ? 'read' : this.pick(['write', 'write', 'flush']);
    const at = Math.floor(this.rand() * (this.size / (64 * KiB))) * 64 * KiB;
    const range = op === 'flush' ? '0-' : this.pick([`${at}+${this.int(1, 16) * 64 * KiB}`, `${at}-`, '0-']);
    return `${side}:${op}:${errno}:${range}${this.rand() < 0.4 ? ':once' : ''}`;
  }

  private stoppedByError(): boolean {
    return (this.proc.status === 'paused' || this.proc.status === 'standby') && this.proc.events.at(-1)?.event !== undefined && this.lastIoStatus() !== 'ok';
  }

  private lastIoStatus(): string {
    for (let i = this.proc.events.length - 1; i >= 0; i--) {
      const e = this.proc.events[i]!;
      if (e.event === 'BLOCK_JOB_ERROR') return 'failed';
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'running') return 'ok';
    }
    return 'ok';
  }

  /** Waits for the process to end; a kill or an ending is followed by a new start. */
  private async restart(resume: boolean, after: string): Promise<void> {
    const code = await this.proc.exit(30_000, after);
    this.note(`process ended: ${code}${this.proc.stderr.length ? `; it said: ${this.proc.stderr.slice(-3).join(' | ')}` : ''}`);
    if (resume && !existsSync(this.checkpoint)) {
      // Killed before its first checkpoint: nothing to resume, a fresh job takes over the target.
      resume = false;
    }
    if (resume) this.figures.resumes++;
    else this.figures.restarts++;
    await this.start(resume);
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
      if (this.proc.status === 'paused' || this.proc.status === 'standby') {
        if (this.rules.length) await this.cmd('fault-remove', { all: true });
        this.rules.length = 0;
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
        const bytes = this.int(1, 64) * 4 * KiB;
        const offset = Math.floor(this.rand() * ((this.size - bytes) / 512)) * 512;
        if (await this.cmd('x-source-write', { offset, bytes, pattern: this.int(1, 255) })) this.figures.guestWrites++;
      } else if (r < 0.42) {
        const rule = this.faultRule(this.rand() < 0.5 ? 'source' : 'target');
        if (await this.cmd('fault-add', { rule })) {
          this.rules.push(rule);
          this.figures.faults++;
        }
      } else if (r < 0.52) {
        // Space is freed, a disk comes back: the faults go, a job stopped by one resumes.
        if (this.rules.length) await this.cmd('fault-remove', { all: true });
        this.rules.length = 0;
        if (this.proc.status === 'paused' || this.proc.status === 'standby') await this.cmd('block-job-resume');
      } else if (r < 0.6) {
        if (this.proc.status === 'paused' || this.proc.status === 'standby') await this.cmd('block-job-resume');
        else if (await this.cmd('block-job-pause')) this.figures.pauses++;
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
        this.note('SIGKILL');
        this.proc.kill('SIGKILL');
        this.figures.kills++;
        await this.restart(true, 'SIGKILL');
      } else if (this.stoppedByError() && this.rand() < 0.5) {
        await this.cmd('block-job-resume');
      }
      await sleep(this.int(5, 120));
    }
  }

  /** Faults gone, job resumed and completed; the process ends by itself (exit 0). */
  private async finish(): Promise<void> {
    await this.cmd('fault-remove', { all: true });
    this.rules.length = 0;
    await this.cmd('block-job-set-speed', { speed: 0 });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (Date.now() > deadline) throw new SoakFailure(`no READY within 120 s after the faults were removed (status ${this.proc.status})`);
      if (this.proc.status === 'paused' || this.proc.status === 'standby') await this.cmd('block-job-resume');
      const ready = await this.proc.waitEvent((e) => e.event === 'BLOCK_JOB_READY', 250);
      const ended = this.proc.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED');
      if (ended) throw new SoakFailure(`the job ended by itself: ${JSON.stringify(ended)}`);
      if (ready && this.proc.status === 'ready') break;
    }
    await this.cmd('block-job-complete');
    const done = await this.proc.waitEvent((e) => e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED', 60_000);
    if (!done) throw new SoakFailure(`no BLOCK_JOB_COMPLETED within 60 s of block-job-complete (status ${this.proc.status})`);
    if (done.event !== 'BLOCK_JOB_COMPLETED' || done.data.error) throw new SoakFailure(`the job ended with ${JSON.stringify(done)}`);
    this.figures.bytesMirrored += Number(done.data.len ?? 0);
    this.proc.closeInput();
    const code = await this.proc.exit(30_000, 'the job completed and its input closed');
    if (code !== 0) throw new SoakFailure(`the mirror exited ${code} after completing: ${this.proc.stderr.join(' | ')}`);
  }

  private verify(): void {
    const ext = this.kind === 'raw' ? 'raw' : 'qcow2';
    const src = join(this.dir, `src.${ext}`);
    const dst = join(this.dir, `dst.${ext}`);
    try {
      sh('qemu-img', ['compare', src, dst]);
    } catch (err) {
      throw new SoakFailure(`LOSS: the target differs from the source: ${(err as { stdout?: string }).stdout ?? err}`);
    }
    if (ext === 'qcow2') {
      try {
        sh('qemu-img', ['check', dst]);
      } catch (err) {
        throw new SoakFailure(`the target is not clean: ${(err as { stdout?: string }).stdout ?? err}`);
      }
    }
  }

  async run(seconds: number): Promise<void> {
    this.makeImages();
    this.note(`round ${this.n}: ${this.kind}, ${this.size} bytes, on-source-error ${this.policies.source}, on-target-error ${this.policies.target}`);
    await this.start(false);
    try {
      await this.chaos(Date.now() + seconds * 1000);
      await this.finish();
    } catch (err) {
      this.proc.kill('SIGKILL');
      throw err;
    }
    this.errorsSeen();
    this.verify();
  }

  private errorsSeen(): void {
    this.figures.errors += this.proc.events.filter((e: QmpEvent) => e.event === 'BLOCK_JOB_ERROR').length;
  }

  get history(): string {
    return this.log.slice(-40).join('\n');
  }
}

async function main(): Promise<number> {
  const { seconds, seed, keep, round: only } = parseArgs(process.argv.slice(2));
  const figures: Figures = { rounds: 0, faults: 0, errors: 0, kills: 0, resumes: 0, resumesRefused: 0, restarts: 0, cancels: 0, pauses: 0, guestWrites: 0, bytesMirrored: 0 };
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const started = Date.now();
  console.log(`soak: ${seconds} s, seed ${seed} (rerun: npm run soak -- --seconds ${seconds} --seed ${seed})`);
  const policies: Policy[] = ['ignore', 'stop', 'enospc'];
  while (Date.now() - started < seconds * 1000) {
    // Each round draws from its own sequence (the seed and its number): `--seed S --round N` makes the same choices again
    // (their timing is the machine's).
    const n = only ?? figures.rounds + 1;
    const rand = prng(Math.imul(seed, 0x9e3779b1) ^ Math.imul(n, 0x85ebca6b));
    const dir = mkdtempSync(join(base, `diskmirror-soak-${n}-`));
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
    const round = new Round(
      n,
      rand,
      dir,
      figures,
      pick(['qcow2-backing', 'raw'] as const),
      pick([4, 8, 12]) * MiB + pick([0, 512, 64 * KiB]),
      { source: pick(policies), target: pick(policies) },
    );
    try {
      await round.run(Math.min(1 + rand() * 4, Math.max(0.5, seconds - (Date.now() - started) / 1000)));
    } catch (err) {
      console.error(`soak: round ${n} FAILED (seed ${seed}; again: npm run soak -- --seed ${seed} --round ${n}): ${(err as Error).message}`);
      console.error(round.history);
      console.error(`images kept in ${dir}`);
      return 1;
    }
    if (process.env.SOAK_VERBOSE) console.log(round.history);
    if (!keep) rmSync(dir, { recursive: true, force: true });
    figures.rounds++;
  }
  const f = figures;
  console.log(
    `soak: ${f.rounds} rounds in ${((Date.now() - started) / 1000).toFixed(0)} s, every target identical to its source and clean: ` +
      `${f.faults} fault rules, ${f.errors} job errors, ${f.kills} kills (SIGKILL), ${f.resumes} resumes from a checkpoint, ` +
      `${f.resumesRefused} resumes refused (the source changed after the checkpoint), ${f.restarts} fresh restarts, ${f.cancels} cancels, ${f.pauses} pauses, ${f.guestWrites} guest writes, ` +
      `${(f.bytesMirrored / MiB).toFixed(0)} MiB mirrored (seed ${seed})`,
  );
  return 0;
}

process.exitCode = await main().catch((err: unknown) => {
  console.error(`soak: ${(err as Error).message}`);
  return 2;
});
