/**
 * The soak: everything at once, for as long as asked, from one seed.
 *
 * Each round (round.ts) mirrors a fresh image with `diskmirror mirror
 * --qmp` (a qcow2 overlay over a qcow2 backing file onto a new qcow2, or
 * raw onto raw) under an error policy per side (ignore, stop or enospc) and
 * a copy mode, while a guest writes to the source (guest.ts: anywhere,
 * across cluster boundaries, into clusters only the backing file holds),
 * faults come and go on both sides, the job is paused, resumed, slowed,
 * cancelled and started again, and its process is killed (SIGKILL) and
 * resumed, half the rounds two or three times before the completion, each
 * resumed process meeting faults from its first requests. Every round ends
 * with the job completed and the target checked: `qemu-img compare`
 * identical to the source and, for qcow2, `qemu-img check` clean. The first
 * loss stops the soak (exit 1) with the seed and round that reproduce it and
 * what both images hold where they differ. The figures at the end (also as
 * one JSON line) say what the run did.
 *
 *   npm run soak -- --seconds 600 --seed 42      (defaults: 60 s, a seed from the clock)
 *   npm run soak -- --seed 42 --round 7           (round 7 of seed 42's choices, again and again)
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prng } from './prng.js';
import { drawPlan, type Figures, newFigures, Round } from './round.js';

const MiB = 1 << 20;

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

/** The run's figures in words, a line per concern, for a closing note to quote. */
function describe(f: Figures, seconds: number, seed: number): string {
  const p = f.policies;
  return [
    `  ${f.rounds} rounds in ${seconds.toFixed(0)} s (seed ${seed}): ${f.qcow2Rounds} qcow2 over a backing file, ${f.rounds - f.qcow2Rounds} raw; ` +
      `${f.writeBlockingRounds} write-blocking; ${f.multiKillRounds} killed two or more times before completing`,
    `  policies (source, target): ignore ${p.source.ignore}, ${p.target.ignore}; stop ${p.source.stop}, ${p.target.stop}; enospc ${p.source.enospc}, ${p.target.enospc}`,
    `  ${f.kills} kills (SIGKILL): ${f.resumes} resumes from a checkpoint, ${f.resumesRefused} of them refused (a guest wrote after the last checkpoint: mirrored again from the start), ` +
      `${f.noCheckpoint} before any checkpoint (a fresh job took over)`,
    `  ${f.guestWrites} guest writes: ${f.gapWrites} into clusters only the backing file held, ${f.crossWrites} across a cluster boundary; ` +
      `${f.takenBack} clusters they allocated taken back by a kill; ${f.cutOffWrites} more under way when a kill came`,
    `  ${f.faults} fault rules (${f.resumeFaults} met by a resumed job from its start), ${f.errors} job errors; ${f.pauses} pauses, ${f.cancels} cancels, ${f.restarts} fresh starts; ` +
      `${f.leaksAfterKill} images leaking clusters after a kill, none corrupt`,
    `  ${(f.bytesMirrored / MiB).toFixed(0)} MiB mirrored`,
  ].join('\n');
}

async function main(): Promise<number> {
  const { seconds, seed, keep, round: only } = parseArgs(process.argv.slice(2));
  const figures = newFigures();
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  const rerun = `npm run soak -- --seconds ${seconds} --seed ${seed}`;
  console.log(`soak: ${seconds} s, seed ${seed} (rerun: ${rerun})`);
  while (elapsed() < seconds) {
    // Each round draws from its own sequence (the seed and its number): `--seed S --round N` makes the same choices again
    // (their timing is the machine's).
    const n = only ?? figures.rounds + 1;
    const rand = prng(Math.imul(seed, 0x9e3779b1) ^ Math.imul(n, 0x85ebca6b));
    const dir = mkdtempSync(join(base, `diskmirror-soak-${n}-`));
    const round = new Round(n, rand, dir, figures, drawPlan(rand, seconds - elapsed()));
    try {
      await round.run();
    } catch (err) {
      console.error(`soak: round ${n} FAILED (seed ${seed}; again: npm run soak -- --seed ${seed} --round ${n}; the whole run: ${rerun}): ${(err as Error).message}`);
      console.error(round.history);
      console.error(`images kept in ${dir}`);
      console.error(`soak: before it failed:\n${describe(figures, elapsed(), seed)}`);
      console.error(`soak: figures ${JSON.stringify({ seed, seconds: Math.round(elapsed()), failedRound: n, ...figures })}`);
      return 1;
    }
    if (process.env.SOAK_VERBOSE) console.log(round.history);
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  console.log(`soak: every target identical to its source and clean\n${describe(figures, elapsed(), seed)}`);
  console.log(`soak: figures ${JSON.stringify({ seed, seconds: Math.round(elapsed()), ...figures })}`);
  return 0;
}

process.exitCode = await main().catch((err: unknown) => {
  console.error(`soak: ${(err as Error).message}`);
  return 2;
});
