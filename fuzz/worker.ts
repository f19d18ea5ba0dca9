/**
 * The fuzzer's executor, in a worker thread (the driver kills it on a hang
 * and starts another). It measures V8's own block coverage of diskmirror's
 * code for each input (the inspector's precise coverage, with execution
 * counts in buckets, as AFL counts edges), refuses any single allocation
 * over a bound, and says whether an input found new coverage, was refused
 * as it should be, or crashed.
 */
import { Session } from 'node:inspector/promises';
import { parentPort, workerData } from 'node:worker_threads';

/** One allocation over this is a finding: a hostile field made the code ask for it. */
const ALLOCATION_BOUND = 64 << 20;

/** Errors that name what is wrong with the input: the code refused it, as it should. */
const EXPECTED = new Set(['FormatError', 'BlockError', 'OptionError', 'CommandError', 'JobError', 'SyntaxError']);
const EXPECTED_MESSAGES = [/^checkpoint .* (is unreadable|is not a diskmirror checkpoint|was written by another version|is damaged)/, /^serialized bitmap/, /^bitmap size/];

class AllocationBoundError extends Error {
  override name = 'AllocationBoundError';
}

function boundAllocations(): void {
  const check = (n: unknown) => {
    if (typeof n === 'number' && n > ALLOCATION_BOUND) throw new AllocationBoundError(`an allocation of ${n} bytes (bound ${ALLOCATION_BOUND})`);
  };
  const OriginalArrayBuffer = ArrayBuffer;
  const OriginalUint8Array = Uint8Array;
  globalThis.ArrayBuffer = new Proxy(OriginalArrayBuffer, {
    construct(target, args) {
      check(args[0]);
      return Reflect.construct(target, args);
    },
  });
  globalThis.Uint8Array = new Proxy(OriginalUint8Array, {
    construct(target, args, newTarget) {
      check(args[0]);
      return Reflect.construct(target, args, newTarget);
    },
  });
}

function bucket(count: number): number {
  return count <= 3 ? count : count <= 7 ? 4 : count <= 15 ? 5 : count <= 31 ? 6 : count <= 127 ? 7 : 8;
}

interface CoverageResult {
  result: { url: string; scriptId: string; functions: { ranges: { startOffset: number; endOffset: number; count: number }[] }[] }[];
}

async function main(): Promise<void> {
  const { target } = workerData as { target: string };
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  // Loaded after coverage starts, so every function has block counters.
  const { TARGETS } = await import('./targets.js');
  const run = TARGETS[target];
  if (!run) throw new Error(`unknown fuzz target ${target} (known: ${Object.keys(TARGETS).join(', ')})`);
  boundAllocations();
  const seen = new Set<string>();
  const take = async (): Promise<number> => {
    const { result } = (await session.post('Profiler.takePreciseCoverage')) as CoverageResult;
    let fresh = 0;
    for (const script of result) {
      if (!script.url.includes('/dist/node/src/')) continue;
      for (const fn of script.functions) {
        for (const r of fn.ranges) {
          if (r.count === 0) continue;
          const key = `${script.url}:${r.startOffset}:${r.endOffset}:${bucket(r.count)}`;
          if (!seen.has(key)) {
            seen.add(key);
            fresh++;
          }
        }
      }
    }
    return fresh;
  };
  await take();
  parentPort!.on('message', async (input: Uint8Array) => {
    let outcome: 'ok' | 'refused' | 'crash' = 'ok';
    let error = '';
    try {
      await run(input);
    } catch (err) {
      const e = err as Error;
      const expected = EXPECTED.has(e?.name) || (e instanceof Error && EXPECTED_MESSAGES.some((m) => m.test(e.message)));
      outcome = expected ? 'refused' : 'crash';
      error = `${e?.name}: ${e?.message}\n${e?.stack ?? ''}`;
    }
    const fresh = await take();
    parentPort!.postMessage({ outcome, error, fresh, blocks: seen.size });
  });
  parentPort!.postMessage({ ready: true, blocks: seen.size });
}

void main();
