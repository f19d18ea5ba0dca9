/**
 * Coverage-guided fuzzing of every parser of untrusted bytes: qcow2 images
 * (header, extensions, L1/L2 entries, refcounts, compressed descriptors,
 * snapshot table, a backing chain), VHD (vpc: footer, dynamic header, BAT),
 * VDI images (header, block map), VHDX images (headers, region table,
 * metadata, BAT; packed, see vhdx-pack.ts), VMDK (sparse header, footer,
 * embedded descriptor, grain directory and tables, compressed grains; a
 * descriptor file), checkpoints (`diskmirror mirror
 * --resume` reading one, then a job resumed from it), and QMP input.
 *
 *   npm run fuzz -- --seconds 600 [--target qcow2|vpc|vdi|vhdx|vmdk|checkpoint|qmp] [--seed S]
 *
 * The seed corpus is made at start by qemu-img (and by diskmirror for
 * checkpoints and QMP), never committed. Inputs are mutated (bit flips,
 * interesting values in 8-, 16-, 32- and 64-bit fields, in both byte
 * orders, erased and repeated ranges, splices of two inputs), run in a
 * worker that measures V8's block coverage, and kept when they reach code
 * no input reached before. An input whose error is not one that names what
 * is wrong (a crash), that runs past 5 s (a hang), or that asks for more
 * than 64 MiB at once is written to fuzz/findings/ and counted; the run
 * ends with the executions, the coverage and the findings, and exits 1 if
 * there were any.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { prng } from '../stress/prng.js';
import { packVhdx } from './vhdx-pack.js';

const HANG_MS = 5000;
const FINDINGS = fileURLToPath(new URL('../../../fuzz/findings/', import.meta.url));
const ALL_TARGETS = ['qcow2', 'vpc', 'vdi', 'vhdx', 'vmdk', 'checkpoint', 'qmp'];

function parseArgs(argv: string[]): { seconds: number; targets: string[]; seed: number } {
  let seconds = 60;
  let targets = ALL_TARGETS;
  let seed = Date.now() % 1_000_000_007;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--seconds') seconds = Number(argv[++i]);
    else if (a === '--target') targets = [argv[++i]!];
    else if (a === '--seed') seed = Number(argv[++i]);
    else throw new Error(`unknown option ${a} (expected --seconds N, --target NAME, --seed S)`);
  }
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds wants a positive number');
  for (const t of targets) if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target ${t} (known: ${ALL_TARGETS.join(', ')})`);
  return { seconds, targets, seed };
}

/** Seeds for each target, made by the real tools. */
function seedCorpus(target: string, dir: string): Uint8Array[] {
  const q = (...args: string[]) => execFileSync('qemu-img', args, { stdio: 'ignore' });
  const io = (fmt: string, image: string, ...cmds: string[]) =>
    execFileSync('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), image], { stdio: 'ignore' });
  const seeds: Uint8Array[] = [];
  if (target === 'qcow2') {
    const variants: [string, string[]][] = [
      ['small', ['-o', 'cluster_size=512']],
      ['refcount1', ['-o', 'cluster_size=512,refcount_bits=1']],
      ['refcount64', ['-o', 'cluster_size=4096,refcount_bits=64']],
      ['v2', ['-o', 'cluster_size=512,compat=0.10']],
      ['extl2', ['-o', 'cluster_size=16384,extended_l2=on']],
      ['zstd', ['-o', 'cluster_size=4096,compression_type=zstd']],
      ['lazy', ['-o', 'cluster_size=512,lazy_refcounts=on']],
    ];
    for (const [name, opts] of variants) {
      const path = join(dir, `${name}.qcow2`);
      q('create', '-q', '-f', 'qcow2', ...opts, path, '64K');
      io('qcow2', path, 'write -P 0x11 0 4k', 'write -z 8k 4k', 'write -P 0x22 33k 1k');
      seeds.push(readFileSync(path));
    }
    // Compressed clusters (zlib), a snapshot, a dirty bitmap's extension.
    const raw = join(dir, 'text.raw');
    writeFileSync(raw, Buffer.from('mirror qcow2 cluster refcount '.repeat(2200)));
    const comp = join(dir, 'comp.qcow2');
    q('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, comp);
    seeds.push(readFileSync(comp));
    const snap = join(dir, 'snap.qcow2');
    q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', snap, '32K');
    io('qcow2', snap, 'write -P 0x33 0 1k');
    q('snapshot', '-c', 'one', snap);
    io('qcow2', snap, 'write -P 0x44 512 1k');
    seeds.push(readFileSync(snap));
    const bm = join(dir, 'bitmap.qcow2');
    q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', bm, '64K');
    q('bitmap', '--add', bm, 'b0');
    seeds.push(readFileSync(bm));
    // A backing chain: the top's bytes, then the backing's, then where the backing starts (in 512-byte units).
    const base = join(dir, 'base.qcow2');
    const top = join(dir, 'top.qcow2');
    q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', base, '16K');
    io('qcow2', base, 'write -P 0x55 0 8k');
    q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', base, '-F', 'qcow2', top);
    io('qcow2', top, 'write -P 0x66 4k 1k');
    const t = readFileSync(top);
    const padded = new Uint8Array(Math.ceil(t.length / 512) * 512);
    padded.set(t);
    const b = readFileSync(base);
    const units = padded.length / 512;
    seeds.push(new Uint8Array([...padded, ...b, units & 0xff, units >> 8]));
  } else if (target === 'vpc' || target === 'vdi') {
    const variants: [string, string][] =
      target === 'vpc'
        ? [
            ['dynamic', 'subformat=dynamic'],
            ['fixed', 'subformat=fixed'],
            ['forced', 'subformat=dynamic,force_size=on'],
          ]
        : [
            ['dynamic', 'static=off'],
            ['static', 'static=on'],
          ];
    for (const [name, opts] of variants) {
      const path = join(dir, `${name}.${target}`);
      q('create', '-q', '-f', target, '-o', opts, path, target === 'vpc' ? '96K' : '1536K');
      io(target, path, 'write -P 0x11 0 4k', 'write -z 8k 4k', 'write -P 0x22 33k 1k');
      seeds.push(readFileSync(path));
    }
  } else if (target === 'vhdx') {
    for (const [name, opts] of [
      ['dynamic', 'subformat=dynamic,block_size=1M'],
      ['fixed', 'subformat=fixed,block_size=1M'],
    ]) {
      const path = join(dir, `${name}.vhdx`);
      q('create', '-q', '-f', 'vhdx', '-o', opts!, path, '3M');
      io('vhdx', path, 'write -P 0x11 0 4k', 'write -z 1M 4k', 'write -P 0x22 2100k 1k');
      const image = new Uint8Array(readFileSync(path));
      seeds.push(packVhdx(image, true), packVhdx(image, false));
    }
  } else if (target === 'vmdk') {
    for (const [name, opts] of [
      ['sparse', 'subformat=monolithicSparse'],
      ['zeroed', 'subformat=monolithicSparse,zeroed_grain=on'],
      ['flat', 'subformat=monolithicFlat'],
    ]) {
      const path = join(dir, `${name}.vmdk`);
      q('create', '-q', '-f', 'vmdk', '-o', opts!, path, '1536K');
      io('vmdk', path, 'write -P 0x11 0 4k', 'write -z 128k 64k', 'write -P 0x22 1000k 1k');
      // The flat image's descriptor file (its extent cannot be opened from memory: the text is what is fuzzed).
      seeds.push(readFileSync(path));
    }
    const raw = join(dir, 'stream.raw');
    q('create', '-q', '-f', 'raw', raw, '1536K');
    io('raw', raw, 'write -P 0x33 0 64k', 'write -P 0x44 700k 3k');
    const stream = join(dir, 'stream.vmdk');
    q('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, stream);
    seeds.push(readFileSync(stream));
  } else if (target === 'checkpoint') {
    const bin = fileURLToPath(new URL('../../../bin/diskmirror.js', import.meta.url));
    for (const [policy, gran] of [['report', '65536'], ['ignore', '4096'], ['stop', '1048576']] as const) {
      const src = join(dir, `cp-${policy}.raw`);
      const dst = join(dir, `cp-${policy}-dst.raw`);
      q('create', '-q', '-f', 'raw', src, '1M');
      io('raw', src, 'write -P 0x77 0 256k', 'write -P 0x78 700k 64k');
      // Interrupted at once: SIGINT after the first checkpoint leaves a sidecar.
      try {
        execFileSync(process.execPath, [bin, 'mirror', '--speed', '64K', '--granularity', gran, '--on-source-error', policy, src, dst], { timeout: 1500, killSignal: 'SIGINT', stdio: 'ignore' });
      } catch {
        // interrupted, as intended
      }
      if (existsSync(`${dst}.dmcheckpoint`)) seeds.push(readFileSync(`${dst}.dmcheckpoint`));
    }
    if (seeds.length === 0) throw new Error('no checkpoint could be made for the seed corpus');
  } else {
    const enc = (s: string) => new TextEncoder().encode(s);
    seeds.push(enc('{"execute":"qmp_capabilities"}\r\n{"execute":"query-block-jobs"}'));
    seeds.push(enc('{"execute":"block-job-set-speed","arguments":{"device":"mirror","speed":1048576},"id":7}'));
    seeds.push(enc('{"execute":"fault-add","arguments":{"rule":"target:write:ENOSPC:1M-:once"}} {"execute":"x-source-write","arguments":{"offset":0,"bytes":4096,"pattern":3}}'));
    seeds.push(enc('[{"execute":"block-job-cancel","arguments":{"device":"m","force":true}}, "\\u00e9\\ud83d\\ude00", 1e309, -0.0, {"a":[[[[]]]]}]'));
  }
  return seeds;
}

/**
 * A JSON input (a checkpoint, QMP) mutated as JSON, so the parsers behind
 * the syntax are reached: one value somewhere replaced by another kind or
 * an edge value, a member removed, or a base64 string (a bitmap) decoded,
 * its bytes mutated, encoded again. Null when the input is not JSON.
 */
function mutateJson(input: Uint8Array, corpus: Uint8Array[], rand: () => number): Uint8Array | null {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return null;
  }
  const slots: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown) => {
    if (v && typeof v === 'object') {
      for (const [k, child] of Object.entries(v)) {
        slots.push({ parent: v as Record<string, unknown>, key: Array.isArray(v) ? Number(k) : k });
        walk(child);
      }
    }
  };
  walk(doc);
  if (slots.length === 0) return null;
  const edge = [0, -1, 1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 64, 1e308, -1e308, '', 'x', null, true, false, [], {}, 'report', 'ignore', 'stop', 'full', 'top', 'none'];
  const { parent, key } = slots[Math.floor(rand() * slots.length)]!;
  const current = (parent as Record<string | number, unknown>)[key];
  const r = rand();
  if (typeof current === 'string' && current.length > 16 && /^[A-Za-z0-9+/=]+$/.test(current) && r < 0.6) {
    const bytes = new Uint8Array(Buffer.from(current, 'base64'));
    (parent as Record<string | number, unknown>)[key] = Buffer.from(mutate(bytes, corpus, rand)).toString('base64');
  } else if (r < 0.15 && !Array.isArray(parent)) {
    delete (parent as Record<string, unknown>)[key as string];
  } else if (typeof current === 'number' && r < 0.6) {
    (parent as Record<string | number, unknown>)[key] = [current * 2, current - 1, current + 1, -current, current * 65536][Math.floor(rand() * 5)];
  } else {
    (parent as Record<string | number, unknown>)[key] = structuredClone(edge[Math.floor(rand() * edge.length)]);
  }
  return new TextEncoder().encode(JSON.stringify(doc));
}

function mutate(input: Uint8Array, corpus: Uint8Array[], rand: () => number): Uint8Array {
  let out = input.slice();
  const n = 1 + Math.floor(rand() * 4);
  const at = (len: number) => {
    if (out.length === 0) return 0;
    // Metadata sits at the start of an image: most changes land in its first 4 KiB.
    const span = rand() < 0.7 ? Math.min(out.length, 4096) : out.length;
    return Math.floor(rand() * Math.max(1, span - len + 1));
  };
  const interesting = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 512, 4096, 65536, 1 << 21];
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(rand() * 8);
    if (kind === 0 && out.length) {
      const p = at(1);
      out[p]! ^= 1 << Math.floor(rand() * 8);
    } else if (kind === 1 && out.length) {
      out[at(1)] = interesting[Math.floor(rand() * 5)]!;
    } else if (kind === 2 && out.length >= 4) {
      const p = at(4);
      const v = interesting[Math.floor(rand() * interesting.length)]!;
      new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(p, v >>> 0, rand() < 0.8 ? false : true);
    } else if (kind === 3 && out.length >= 8) {
      const p = at(8);
      const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
      dv.setUint32(p, rand() < 0.5 ? 0 : 0xffffffff);
      dv.setUint32(p + 4, interesting[Math.floor(rand() * interesting.length)]! >>> 0);
    } else if (kind === 4 && out.length > 16) {
      // Erase a range.
      const p = at(16);
      const len = 1 + Math.floor(rand() * Math.min(512, out.length - p));
      out = new Uint8Array([...out.subarray(0, p), ...out.subarray(p + len)]);
    } else if (kind === 5 && out.length > 0 && out.length < 1 << 20) {
      // Repeat a range.
      const p = at(1);
      const len = 1 + Math.floor(rand() * Math.min(256, out.length - p));
      out = new Uint8Array([...out.subarray(0, p + len), ...out.subarray(p, p + len), ...out.subarray(p + len)]);
    } else if (kind === 6 && corpus.length > 1) {
      // Splice another input's bytes in.
      const other = corpus[Math.floor(rand() * corpus.length)]!;
      if (other.length && out.length) {
        const p = at(1);
        const q = Math.floor(rand() * other.length);
        const len = Math.min(1 + Math.floor(rand() * 512), other.length - q, out.length - p);
        out.set(other.subarray(q, q + len), p);
      }
    } else if (kind === 7 && out.length) {
      // A byte range set to one value (a run of zeroes or 0xff).
      const p = at(1);
      const len = 1 + Math.floor(rand() * Math.min(64, out.length - p));
      out.fill(rand() < 0.5 ? 0 : 0xff, p, p + len);
    }
  }
  return out;
}

interface Outcome {
  outcome: 'ok' | 'refused' | 'crash' | 'hang';
  error: string;
  fresh: number;
  blocks: number;
}

class Executor {
  private worker!: Worker;
  blocks = 0;

  constructor(
    private readonly target: string,
    private readonly scratch: string,
  ) {}

  async start(): Promise<void> {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { target: this.target, scratch: this.scratch }, resourceLimits: { maxOldGenerationSizeMb: 1024 } });
    const ready = await new Promise<{ blocks: number }>((resolve, reject) => {
      this.worker.once('message', resolve);
      this.worker.once('error', reject);
    });
    this.blocks = Math.max(this.blocks, ready.blocks);
  }

  async run(input: Uint8Array): Promise<Outcome> {
    const answer = new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => resolve({ outcome: 'hang', error: `ran past ${HANG_MS} ms`, fresh: 0, blocks: this.blocks }), HANG_MS);
      const done = (o: Outcome) => {
        clearTimeout(timer);
        this.worker.off('error', failed);
        resolve(o);
      };
      const failed = (err: Error) => done({ outcome: 'crash', error: `the worker died: ${err.message}`, fresh: 0, blocks: this.blocks });
      this.worker.once('message', done);
      this.worker.once('error', failed);
    });
    this.worker.postMessage(input);
    const o = await answer;
    if (o.outcome === 'hang' || o.error.startsWith('the worker died')) {
      await this.worker.terminate();
      await this.start();
    }
    this.blocks = Math.max(this.blocks, o.blocks);
    return o;
  }

  stop(): Promise<number> {
    return this.worker.terminate();
  }
}

async function main(): Promise<number> {
  const { seconds, targets, seed } = parseArgs(process.argv.slice(2));
  const rand = prng(seed);
  const dir = mkdtempSync(join(tmpdir(), 'diskmirror-fuzz-seeds-'));
  let findings = 0;
  console.log(`fuzz: ${targets.join(', ')}, ${seconds} s in all, seed ${seed}`);
  try {
    for (const target of targets) {
      const corpus = seedCorpus(target, dir);
      const scratch = mkdtempSync(join(dir, `${target}-`));
      const exec = new Executor(target, scratch);
      await exec.start();
      for (const s of corpus) await exec.run(s);
      const until = Date.now() + (seconds * 1000) / targets.length;
      let runs = 0;
      let refused = 0;
      const reasons = new Map<string, number>();
      const seen = new Set<string>();
      while (Date.now() < until) {
        const parent = corpus[Math.floor(rand() * corpus.length)]!;
        const input = (target !== 'qcow2' && rand() < 0.7 ? mutateJson(parent, corpus, rand) : null) ?? mutate(parent, corpus, rand);
        const o = await exec.run(input);
        runs++;
        if (o.outcome === 'refused') {
          refused++;
          const why = o.error.split('\n')[0]!.replace(/\d+/g, 'N').slice(0, 120);
          reasons.set(why, (reasons.get(why) ?? 0) + 1);
        }
        if (o.fresh > 0 && o.outcome !== 'crash' && o.outcome !== 'hang') corpus.push(input);
        if (o.outcome === 'crash' || o.outcome === 'hang') {
          // One finding per distinct first line of the error (the same bug found twice is one).
          const key = `${o.outcome}:${o.error.split('\n')[0]!.replace(/\d+/g, 'N')}`;
          if (seen.has(key)) continue;
          seen.add(key);
          findings++;
          mkdirSync(FINDINGS, { recursive: true });
          const name = `${target}-${o.outcome}-${createHash('sha256').update(input).digest('hex').slice(0, 12)}`;
          writeFileSync(join(FINDINGS, `${name}.bin`), input);
          writeFileSync(join(FINDINGS, `${name}.txt`), `${o.error}\n`);
          console.log(`  ${target}: ${o.outcome}: ${o.error.split('\n')[0]} (fuzz/findings/${name}.bin)`);
        }
      }
      await exec.stop();
      for (const [why, count] of [...reasons].sort((a, b) => b[1] - a[1]).slice(0, 5)) console.log(`  refused ${count}x: ${why}`);
      console.log(`fuzz ${target}: ${runs} executions (${(runs / ((seconds * 1000) / targets.length / 1000)).toFixed(0)}/s), ${refused} refused by name, corpus ${corpus.length}, ${exec.blocks} code blocks reached, ${seen.size} findings`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const kept = existsSync(FINDINGS) ? readdirSync(FINDINGS).filter((f) => f.endsWith('.bin')).length : 0;
  console.log(`fuzz: ${findings} new findings (${kept} inputs in fuzz/findings/)`);
  return findings > 0 ? 1 : 0;
}

process.exitCode = await main().catch((err: unknown) => {
  console.error(`fuzz: ${(err as Error).stack ?? err}`);
  return 2;
});
