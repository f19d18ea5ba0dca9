/**
 * A real SIGKILL of the command while it writes each format: a mirror into
 * an existing vpc, vdi, vhdx or vmdk target (made by qemu-img), killed at
 * seeded moments while it copies, leaves a target qemu-img opens (and
 * checks without corruption where it checks); `--resume` then finishes it,
 * equal to the source by qemu-img compare. The crash suites
 * (test/format/*-crash.test.ts) try every write point in memory; this is the
 * same promise kept by the process, its files and the operating system.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAfter, run } from '../helpers/cli.js';
import { qemuCheck, tempDir } from '../helpers/qemu.js';
import { randInt, rng } from '../helpers/random.js';
import { requireBuiltCommand, requireProgram } from '../helpers/require-program.js';

const MiB = 1 << 20;
const SIZE = 48 * MiB;

let dir: ReturnType<typeof tempDir>;
let source: string;
beforeAll(() => {
  requireProgram('qemu-img', 'the oracle these tests compare with');
  requireBuiltCommand();
  dir = tempDir('diskmirror-format-kill-');
  // Data with holes: 1 MiB runs of random bytes, every other one.
  const next = rng(4711);
  const bytes = new Uint8Array(SIZE);
  for (let at = 0; at < SIZE; at += 2 * MiB) for (let i = at; i < at + MiB; i++) bytes[i] = randInt(next, 256);
  source = dir.file('source.raw');
  writeFileSync(source, bytes);
});
afterAll(() => dir?.remove());

const FORMATS: { format: string; create: string[]; checks: boolean }[] = [
  { format: 'vpc', create: ['-o', 'subformat=dynamic,force_size=on'], checks: false },
  { format: 'vdi', create: [], checks: true },
  { format: 'vhdx', create: ['-o', 'subformat=dynamic'], checks: true },
  { format: 'vmdk', create: ['-o', 'subformat=monolithicSparse'], checks: true },
];

describe('SIGKILL while a mirror writes each format', () => {
  for (const f of FORMATS) {
    it(`${f.format}: every kill leaves an image qemu-img opens; --resume finishes it equal to the source`, async () => {
      const target = dir.file(`target.${f.format}`);
      execFileSync('qemu-img', ['create', '-q', '-f', f.format, ...f.create, target, String(SIZE)]);
      const args = ['mirror', '-f', 'raw', '--speed', String(24 * MiB), '--checkpoint-interval', '1', source, target];
      const moments = [150, 400, 700, 1000, 1400];
      let interrupted = 0;
      for (const [i, ms] of moments.entries()) {
        // The first kill comes while the copy runs; the others during resumed runs.
        await killAfter(i === 0 || !existsSync(`${target}.dmcheckpoint`) ? args : [...args, '--resume'], ms);
        if (existsSync(`${target}.dmcheckpoint`)) interrupted++;
        const info = await run(['info', '--output=json', target]).catch(() => null);
        expect(info, `${f.format}: diskmirror info after the kill at ${ms} ms`).not.toBeNull();
        // qemu-img opens it (info exits 0), and where it checks, finds no corruption (0 clean, 3 leaks only).
        execFileSync('qemu-img', ['info', '-f', f.format, target], { stdio: 'pipe' });
        if (f.checks) {
          const check = await qemuCheck(target, ['-f', f.format]);
          expect([0, 3], `${f.format} after the kill at ${ms} ms: ${check.corruptions} corruptions, ${check.stderr}`).toContain(check.code);
        }
      }
      // The kills met a copy under way (a checkpoint left to resume from), not only finished runs.
      expect(interrupted, `${f.format}: kills that left a job to resume`).toBeGreaterThanOrEqual(2);
      const resumed = await run(existsSync(`${target}.dmcheckpoint`) ? [...args, '--resume'] : args);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', f.format, source, target], { encoding: 'utf8' })).toContain('Images are identical');
      if (f.checks) expect((await qemuCheck(target, ['-f', f.format])).code).toBe(0);
    }, 120_000);
  }
});
