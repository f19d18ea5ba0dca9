/**
 * QEMU 7.2 against `diskmirror mirror --qmp`: the same mirror scenarios run
 * in both, on images made here with qemu-img and qemu-io, with the same
 * faults (blkdebug `inject-error` rules on QEMU's side, `--inject` and
 * `fault-add` on ours), the same speed, granularity and buf-size, the same
 * guest writes (through an NBD export of QEMU's source node; `x-source-write`
 * on ours); then what each said is compared:
 *
 * - the events: names; JOB_STATUS_CHANGE statuses; BLOCK_JOB_ERROR device,
 *   operation and action; the READY, COMPLETED and CANCELLED data (the
 *   `error` text included), `offset` only where it is settled (not when a
 *   job is cancelled mid-copy under a speed limit: how far each got then is
 *   a matter of timing);
 * - every command's answer: `return`, or `error` with its class and desc;
 * - query-block-jobs and query-jobs at quiescent points: every field QEMU
 *   has, `offset` and `busy` only where they do not depend on timing;
 * - where QEMU's job completed: that the target equals the source, and
 *   that QEMU's target and diskmirror's are the same bytes.
 *
 * Any difference fails the scenario unless ALLOWED names it, with the
 * reason. Both sides of a scenario run at once; each waits for its own
 * events, so timing never decides the order of a step.
 *
 * diskmirror's monitor is driven as QEMU's is: greeting, qmp_capabilities,
 * commands; it keeps answering after its job has gone. A diskmirror that
 * opens without a greeting (the monitor before that protocol) is driven
 * anyway: the steps after its job has gone are skipped, and the report says
 * so.
 *
 * The scenarios are data (qemu-differential/scenarios.ts); the runner plays
 * them on both sides (qemu-differential/runner.ts); the comparator says what
 * differs and what may (qemu-differential/comparator.ts).
 *
 * DIFF_VERBOSE=1 prints both transcripts of every scenario, passing or not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireQemu, tempDir } from '../helpers/qemu.js';
import { requireQemuSystem } from '../helpers/qemu-mirror.js';
import { ALLOWED, differences, EXTRA_ERROR_MEMBERS, QEMU_NONDETERMINISM, report } from './qemu-differential/comparator.js';
import { type Outcome, pooled, type RunDir, runScenario } from './qemu-differential/runner.js';
import { SCENARIOS } from './qemu-differential/scenarios.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

let dir: RunDir;

/** Scenarios at once: each is two processes, mostly waiting; 2 cores are not saturated by 3. */
const CONCURRENT_SCENARIOS = 3;
const outcomes = new Map<string, Outcome | Error>();
/** Why nothing ran (QEMU or the build missing): every test fails with it, none is skipped. */
let setupError: Error | null = null;

beforeAll(async () => {
  try {
    requireQemuSystem();
    requireQemu();
    requireBuiltCommand();
  } catch (err) {
    setupError = err instanceof Error ? err : new Error(String(err));
    return;
  }
  dir = tempDir('diskmirror-qemu-diff-');
  const runs = await pooled(
    SCENARIOS.map((sc) => async (): Promise<Outcome | Error> => {
      try {
        return await runScenario(sc, dir);
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
    }),
    CONCURRENT_SCENARIOS,
  );
  runs.forEach((r, i) => outcomes.set(SCENARIOS[i]!.name, r));
}, 150_000);

afterAll(() => dir?.remove());

describe('QEMU 7.2 blockdev-mirror and diskmirror mirror --qmp say the same', () => {
  it('QEMU, qemu-img, qemu-io and the built command are there', () => {
    if (setupError) throw setupError;
  });

  it('scenario names are unique, and every allowance says why', () => {
    expect(new Set(SCENARIOS.map((s) => s.name)).size).toBe(SCENARIOS.length);
    for (const a of [...Object.values(ALLOWED), EXTRA_ERROR_MEMBERS, QEMU_NONDETERMINISM]) expect(a.reason.length).toBeGreaterThan(40);
  });

  it.each(SCENARIOS.map((sc) => [sc.name]))('%s', (name) => {
    if (setupError) throw setupError;
    const o = outcomes.get(name);
    if (o instanceof Error) throw o;
    expect(o, 'the scenario ran').toBeDefined();
    const diffs = differences(o!);
    if (process.env.DIFF_VERBOSE) console.log(report(o!, diffs));
    expect(diffs, report(o!, diffs)).toEqual([]);
  });
});
