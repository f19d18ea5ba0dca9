/**
 * Convert benchmark: a 1 GiB fully allocated qcow2 image to raw and back to
 * qcow2, with `diskmirror convert` and with `qemu-img convert`, measured in
 * the same run on the same files (alternating, best of the rounds, each run
 * after a `sync` so none pays for the one before's dirty pages), each result
 * checked with `qemu-img compare`.
 *
 *   npm run bench:convert            (BENCH_CONVERT_MIB=256 for a smaller image)
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuCompare, timeProcess } from './processes.js';

const MIB = 1 << 20;
const SIZE_MIB = Number(process.env.BENCH_CONVERT_MIB ?? 1024);
const ROUNDS = Number(process.env.BENCH_CONVERT_ROUNDS ?? 4);
const BIN = fileURLToPath(new URL('../../../bin/diskmirror.js', import.meta.url));

/** Each run starts after a `sync`, so none pays for the one before's dirty pages. */
const run = (program: string, args: string[]) => timeProcess(program, args, { sync: true });

function main(): void {
  const dir = mkdtempSync(join(tmpdir(), 'diskmirror-bench-'));
  try {
    // The source: incompressible data in every cluster, so everything is allocated and copied.
    const seed = join(dir, 'seed.raw');
    const fd = openSync(seed, 'w');
    const chunk = new Uint8Array(MIB);
    for (let i = 0; i < SIZE_MIB; i++) {
      randomFillSync(chunk);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const source = join(dir, 'source.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', seed, source]);
    rmSync(seed);
    console.log(`convert benchmark: ${SIZE_MIB} MiB fully allocated qcow2 -> raw -> qcow2, best of ${ROUNDS} rounds`);

    const tools = {
      diskmirror: (args: string[]) => run(process.execPath, [BIN, 'convert', ...args]),
      'qemu-img': (args: string[]) => run('qemu-img', ['convert', ...args]),
    } as const;
    const best: Record<string, { toRaw: number; toQcow2: number }> = {};
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate which tool goes first, so neither always follows the other's file deletions.
      const order = Object.entries(tools);
      if (round % 2 === 1) order.reverse();
      for (const [name, convert] of order) {
        const raw = join(dir, `${name}.raw`);
        const back = join(dir, `${name}.qcow2`);
        rmSync(raw, { force: true });
        rmSync(back, { force: true });
        const toRaw = convert(['-f', 'qcow2', '-O', 'raw', source, raw]);
        const toQcow2 = convert(['-f', 'raw', '-O', 'qcow2', raw, back]);
        qemuCompare(source, raw);
        qemuCompare(source, back);
        const b = (best[name] ??= { toRaw: Infinity, toQcow2: Infinity });
        b.toRaw = Math.min(b.toRaw, toRaw);
        b.toQcow2 = Math.min(b.toQcow2, toQcow2);
        rmSync(raw);
        rmSync(back);
      }
    }
    for (const [name, b] of Object.entries(best)) {
      const total = b.toRaw + b.toQcow2;
      const mbs = (2 * SIZE_MIB) / (total / 1000);
      console.log(
        `  ${name.padEnd(11)} qcow2->raw ${(b.toRaw / 1000).toFixed(2)} s, raw->qcow2 ${(b.toQcow2 / 1000).toFixed(2)} s, total ${(total / 1000).toFixed(2)} s (${mbs.toFixed(0)} MiB/s)`,
      );
    }
    const ours = best.diskmirror!.toRaw + best.diskmirror!.toQcow2;
    const theirs = best['qemu-img']!.toRaw + best['qemu-img']!.toQcow2;
    console.log('  every result: qemu-img compare says identical');
    console.log(`convert diskmirror/qemu-img time ratio: ${(ours / theirs).toFixed(2)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
