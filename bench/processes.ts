/** What the Node benchmarks share: timing a whole process, and checking a result with qemu-img. */
import { execFileSync, spawnSync } from 'node:child_process';

/** Runs a program to its end; its wall time in milliseconds. `sync` first: no dirty pages of the run before it. */
export function timeProcess(program: string, args: string[], options: { sync?: boolean } = {}): number {
  if (options.sync) execFileSync('sync');
  const start = performance.now();
  const r = spawnSync(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`${program} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().trim()}`);
  return ms;
}

/** Throws unless `qemu-img compare` says the two images read the same. */
export function qemuCompare(a: string, b: string): void {
  const r = spawnSync('qemu-img', ['compare', a, b], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}
