/**
 * Challenges: a goal state and a limit, reached by the learner's own
 * settings and commands, and judged on what the job's events showed (the
 * same facts a lesson's checks read), never on what the learner says.
 */
import type { MirrorOptions } from '../mirror/options.js';
import { FactRecorder, type RunFacts } from './facts.js';
import type { AnyQmpEvent } from '../qapi/events.js';

export interface Challenge {
  id: string;
  title: string;
  /** The goal, in plain words. */
  goal: string;
  setup: {
    source: 'demo';
    target: string;
    /** The mirror form as the challenge leaves it: the learner may change anything. */
    options: MirrorOptions;
    faults: string[];
    guest?: number;
  };
  /** The most commands the learner may send to the job once it runs (Start mirror is not one). */
  maxCommands: number;
  /** Whether the run met the goal within the limit, and why not. */
  judge(f: RunFacts, commands: number): { met: boolean; why: string };
}

const overLimit = (commands: number, max: number) => (commands > max ? `it took ${commands} commands, more than ${max}` : null);

export const CHALLENGES: readonly Challenge[] = [
  {
    id: 'fails-twice',
    title: 'Through two failures to the end',
    goal: 'The target fails twice (a write at 2 MiB and one at 6 MiB, each once). Complete the mirror, with the target equal to the source, using at most three commands.',
    setup: { source: 'demo', target: 'challenge-fails-twice.raw', options: { sync: 'full', speed: 4 << 20 }, faults: ['target:write:EIO:2M+4K:once', 'target:write:EIO:6M+4K:once'] },
    maxCommands: 3,
    judge(f, commands) {
      const why =
        (f.errors.length < 2 ? `the target failed ${f.errors.length} time(s), not twice: keep the faults armed` : null) ??
        (f.ending?.kind !== 'completed' ? (f.ending ? `the job ${f.ending.kind === 'failed' ? `failed (${f.ending.error})` : 'was cancelled'}` : 'the job has not ended') : null) ??
        (f.targetMatches !== true ? 'the target does not equal the source' : null) ??
        overLimit(commands, 3);
      return why ? { met: false, why } : { met: true, why: `completed through ${f.errors.length} failures with ${commands} command(s)` };
    },
  },
  {
    id: 'keep-up',
    title: 'Keep up with a busy guest',
    goal: 'A guest writes 8 MiB/s while the copy is limited to 2 MiB/s. Without slowing the guest, reach READY within 10 s of the start and complete the mirror while the guest still writes, using at most two commands.',
    setup: { source: 'demo', target: 'challenge-keep-up.raw', options: { sync: 'full', speed: 2 << 20 }, faults: [], guest: 8 << 20 },
    maxCommands: 2,
    judge(f, commands) {
      const start = f.statuses[0]?.atMs ?? 0;
      const ready = f.readyAtMs[0];
      const why =
        (ready === undefined ? 'READY never came: the guest dirtied the disk faster than the job copied it' : null) ??
        (ready! - start > 10_000 ? `READY came ${((ready! - start) / 1000).toFixed(1)} s after the start, later than 10 s` : null) ??
        (!f.guestWroteAtReady ? 'the guest had stopped before READY' : null) ??
        (f.ending?.kind !== 'completed' ? 'the job did not complete' : null) ??
        (f.targetMatches !== true ? 'the target does not equal the source' : null) ??
        overLimit(commands, 2);
      return why ? { met: false, why } : { met: true, why: `READY ${((ready! - start) / 1000).toFixed(1)} s after the start with the guest writing, then completed (${commands} command(s))` };
    },
  },
];

export function challengeById(id: string): Challenge | undefined {
  return CHALLENGES.find((c) => c.id === id);
}

/** Follows one attempt: the job's events, the commands the learner sent, and at the end the verdict. */
export class ChallengeAttempt {
  readonly recorder: FactRecorder;
  private commandsSent = 0;

  constructor(
    readonly challenge: Challenge,
    diskBytes: number,
    now: () => number = () => performance.now(),
  ) {
    this.recorder = new FactRecorder(diskBytes, now, challenge.setup.guest !== undefined);
  }

  get commands(): number {
    return this.commandsSent;
  }

  event(e: AnyQmpEvent): void {
    this.recorder.event(e);
  }

  progress(len: number, offset: number): void {
    this.recorder.progress(len, offset);
  }

  /** The learner sent a command to the job (a verb, a fault change, the guest switched). */
  command(): void {
    this.commandsSent++;
  }

  guestStopped(): void {
    this.recorder.guestStopped();
  }

  /** Once the job ended: whether the target equals the source (null: not compared), then the verdict. */
  verdict(targetMatches: boolean | null): { met: boolean; why: string } {
    this.recorder.compared(targetMatches);
    return this.challenge.judge(this.recorder.facts, this.commandsSent);
  }
}
