/** qemu-img as the oracle: compare and check, run at test time. */
import { execFileSync, spawnSync } from 'node:child_process';

export function haveQemuImg(): boolean {
  return spawnSync('qemu-img', ['--version']).status === 0;
}

export function requireQemuImg(): void {
  if (!haveQemuImg()) {
    throw new Error('qemu-img is required for this suite: sudo apt-get install -y qemu-utils (.ci/run installs it)');
  }
}

/** `qemu-img compare`: 0 identical, 1 different, 2 error. */
export function qemuCompare(a: string, b: string): { code: number; output: string } {
  const r = spawnSync('qemu-img', ['compare', a, b], { encoding: 'utf8' });
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

/** `qemu-img check`: 0 clean, 2 corruptions, 3 leaks only, 1 could not check. */
export function qemuCheck(path: string): { code: number; output: string } {
  const r = spawnSync('qemu-img', ['check', path], { encoding: 'utf8' });
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}
