/**
 * diskmirror against qemu-img on the same files, every case of the
 * performance targets in one table: `diskmirror convert` and
 * `qemu-img convert`, interleaved (A B A B ...; which goes first alternates
 * by case), at least 5 runs each, every result checked with
 * `qemu-img compare`. Times are whole processes (Node's start included).
 * The speed ratio is qemu-img's median time over diskmirror's: above 1,
 * diskmirror is faster.
 *
 *   npm run bench                     (BENCH_RUNS=7, BENCH_DIR=/dev/shm/x to choose)
 *
 * Writes bench/results/node.json (the table, CPU count, Node and qemu-img
 * versions) and ends with `worst diskmirror/qemu-img speed ratio: N`.
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuCompare, timeProcess } from './processes.js';

const MIB = 1 << 20;
const RUNS = Math.max(5, Number(process.env.BENCH_RUNS ?? 5));
const BIN = fileURLToPath(new URL('../../../bin/diskmirror.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../../bench/results/', import.meta.url));

interface Case {
  name: string;
  /** convert's arguments before SRC DST. */
  args: string[];
  source: string;
  ext: string;
}

interface Row {
  name: string;
  diskmirror: { median: number; min: number; max: number };
  qemuImg: { median: number; min: number; max: number };
  /** qemu-img's median time over diskmirror's (above 1: diskmirror is faster). */
  ratio: number;
}

function stats(ms: number[]): { median: number; min: number; max: number } {
  const s = [...ms].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
}

/** Mostly data with a 2 MiB run of zeroes every 16 MiB. */
function writeDataImage(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  const chunk = new Uint8Array(MIB);
  for (let i = 0; i < mib; i++) {
    if (i % 16 === 3 || i % 16 === 4) chunk.fill(0);
    else randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

/** Text-like data (compresses about 3:1). */
function writeCompressible(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  const words = ['mirror ', 'qcow2 ', 'cluster ', 'refcount ', 'bitmap ', 'granularity ', 'READY ', 'pivot '];
  const chunk = new Uint8Array(MIB);
  const noise = new Uint8Array(MIB / 8);
  for (let i = 0; i < mib; i++) {
    let at = 0;
    randomFillSync(noise);
    let n = 0;
    while (at < MIB) {
      const w = words[noise[n++ % noise.length]! % words.length]!;
      for (let k = 0; k < w.length && at < MIB; k++) chunk[at++] = w.charCodeAt(k) ^ (noise[(n + k) % noise.length]! & 1);
    }
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

function makeCases(dir: string): Case[] {
  const q = (args: string[]) => execFileSync('qemu-img', args, { stdio: 'ignore' });
  const raw = join(dir, 'data.raw');
  writeDataImage(raw, 512);
  const qcow2 = join(dir, 'data.qcow2');
  q(['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  // 64 GiB virtual, 128 MiB in 64 KiB clusters scattered over it.
  const scattered = join(dir, 'scattered.qcow2');
  q(['create', '-q', '-f', 'qcow2', scattered, '64G']);
  const writes: string[] = [];
  for (let i = 0; i < 2048; i++) writes.push('-c', `write -P ${(i % 250) + 1} ${((i * 2654435761) % (1 << 20)) * 65536} 64k`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...writes, scattered], { stdio: 'ignore' });
  const text = join(dir, 'text.raw');
  writeCompressible(text, 256);
  const compressed = join(dir, 'compressed.qcow2');
  q(['convert', '-c', '-f', 'raw', '-O', 'qcow2', text, compressed]);
  rmSync(text);
  // 8 TiB virtual, 4 MiB of data.
  const sparse = join(dir, 'sparse.raw');
  closeSync(openSync(sparse, 'w'));
  execFileSync('truncate', ['-s', '8T', sparse]);
  for (const at of ['0', '1T', '5T', '8000G']) execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P 0x44 ${at} 1M`, sparse], { stdio: 'ignore' });
  return [
    { name: 'raw to raw (512 MiB)', args: ['-f', 'raw', '-O', 'raw'], source: raw, ext: 'raw' },
    { name: 'qcow2 to raw (512 MiB)', args: ['-f', 'qcow2', '-O', 'raw'], source: qcow2, ext: 'raw' },
    { name: 'raw to qcow2 (512 MiB)', args: ['-f', 'raw', '-O', 'qcow2'], source: raw, ext: 'qcow2' },
    { name: 'scattered 64 GiB qcow2 to qcow2', args: ['-f', 'qcow2', '-O', 'qcow2'], source: scattered, ext: 'qcow2' },
    { name: 'scattered 64 GiB qcow2 to raw', args: ['-f', 'qcow2', '-O', 'raw'], source: scattered, ext: 'raw' },
    { name: 'compressed qcow2 to raw (256 MiB)', args: ['-f', 'qcow2', '-O', 'raw'], source: compressed, ext: 'raw' },
    { name: 'sparse 8 TiB raw to raw', args: ['-f', 'raw', '-O', 'raw'], source: sparse, ext: 'raw' },
    { name: 'sparse 8 TiB raw to qcow2', args: ['-f', 'raw', '-O', 'qcow2'], source: sparse, ext: 'qcow2' },
  ];
}

function main(): void {
  const base = process.env.BENCH_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(base, 'diskmirror-bench-'));
  try {
    console.log(`diskmirror convert against qemu-img convert, ${RUNS} interleaved runs each, in ${base}; whole processes`);
    const cases = makeCases(dir);
    const rows: Row[] = [];
    for (const [i, c] of cases.entries()) {
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        const order: ('d' | 'q')[] = (run + i) % 2 ? ['q', 'd'] : ['d', 'q'];
        for (const who of order) {
          const out = join(dir, `out-${who}.${c.ext}`);
          rmSync(out, { force: true });
          const ms = who === 'd' ? timeProcess(process.execPath, [BIN, 'convert', ...c.args, c.source, out]) : timeProcess('qemu-img', ['convert', ...c.args, c.source, out]);
          qemuCompare(c.source, out);
          (who === 'd' ? ours : theirs).push(ms);
          rmSync(out);
        }
      }
      const d = stats(ours);
      const q = stats(theirs);
      rows.push({ name: c.name, diskmirror: d, qemuImg: q, ratio: q.median / d.median });
    }
    const f = (ms: number) => (ms / 1000).toFixed(3);
    console.log(`${'case'.padEnd(36)} ${'diskmirror s (min-max)'.padEnd(26)} ${'qemu-img s (min-max)'.padEnd(26)} speed ratio`);
    for (const r of rows) {
      const d = `${f(r.diskmirror.median)} (${f(r.diskmirror.min)}-${f(r.diskmirror.max)})`;
      const q = `${f(r.qemuImg.median)} (${f(r.qemuImg.min)}-${f(r.qemuImg.max)})`;
      console.log(`${r.name.padEnd(36)} ${d.padEnd(26)} ${q.padEnd(26)} ${r.ratio.toFixed(2)}`);
    }
    console.log('every result: qemu-img compare says identical');
    const qemuVersion = execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0];
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(
      join(RESULTS, 'node.json'),
      `${JSON.stringify({ date: new Date().toISOString(), cpus: availableParallelism(), node: process.version, qemuImg: qemuVersion, dir: base, runs: RUNS, rows }, null, 2)}\n`,
    );
    console.log(`worst diskmirror/qemu-img speed ratio: ${Math.min(...rows.map((r) => r.ratio)).toFixed(2)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
