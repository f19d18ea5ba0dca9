/**
 * QEMU and diskmirror refuse each other as QEMU refuses itself. diskmirror
 * takes QEMU's lock bytes (a reader: those of qemu-img convert's source; a
 * writer: those of qemu-img convert's qcow2 target, or of qemu-io writing a
 * qcow2 image), so the test is differential: whoever holds an image, a
 * diskmirror reader or writer meets the same answer as its QEMU counterpart,
 * and whatever QEMU tool tries an image diskmirror holds meets the same
 * answer as against diskmirror's QEMU counterpart. Both orders, reader and
 * writer on each side, qemu-io, qemu-img and qemu-nbd.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, run } from '../helpers/cli.js';
import { qemuCompare, qemuImg, qemuIo, requireQemu, tempDir } from '../helpers/qemu.js';
import { requireBuiltCommand, requireProgram } from '../helpers/require-program.js';

const MiB = 1 << 20;
let root: ReturnType<typeof tempDir>;
let n = 0;

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  requireProgram('qemu-nbd', 'its locks are among those compared');
  root = tempDir('diskmirror-qemu-locks-');
});
afterAll(() => root?.remove());

/** A fresh directory for one case. */
function workdir(): string {
  return mkdirSync(root.file(`case${n++}`), { recursive: true })!;
}

/** The bytes of QEMU's lock range (100..203) locked on `path`, from the kernel's lock table. */
function lockedBytes(path: string): number[] {
  const ino = statSync(path).ino;
  const bytes = new Set<number>();
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'OFDLCK' || !f[5]?.endsWith(`:${ino}`)) continue;
    for (let b = Number(f[6]); b <= Math.min(Number(f[7]), 300); b++) bytes.add(b);
  }
  return [...bytes].sort((a, b) => a - b);
}

/** Waits until `path` carries exactly `bytes` (the holder has opened it), or fails saying what it carries. */
async function untilLocked(path: string, bytes: number[], holder: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (JSON.stringify(lockedBytes(path)) === JSON.stringify(bytes)) return;
    if (holder.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what}: expected QEMU's bytes ${bytes.join(',')} locked on ${path}, found ${lockedBytes(path).join(',') || 'none'}`);
}

/** A refusal in QEMU's words ('Failed to get shared "write" lock'), or 'accepted'. */
function outcome(code: number | null, output: string): string {
  if (code === 0) return 'accepted';
  const m = /Failed to get (shared )?"[a-z ]+" lock/.exec(output);
  return m ? m[0] : `failed otherwise (${code}): ${output.trim()}`;
}

/** Runs a QEMU tool to its end; its outcome. */
function qemuTries(program: string, args: string[]): string {
  const r = spawnSync(program, args, { encoding: 'utf8', timeout: 60_000 });
  if (program === 'qemu-nbd' && r.status === 0) stopForkedNbd(args);
  return outcome(r.status, r.stdout + r.stderr);
}

/** qemu-nbd --fork served (accepted): stop the server it left, by the pid it wrote. */
function stopForkedNbd(args: string[]): void {
  const pidFile = args[args.indexOf('--pid-file') + 1]!;
  process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGTERM');
}

async function diskmirrorTries(args: string[], cwd: string): Promise<{ outcome: string; stderr: string }> {
  const r = await run(args, undefined, { cwd });
  return { outcome: outcome(r.code, r.stderr), stderr: r.stderr };
}

const READER_BYTES = [100, 201, 203];
const WRITER_BYTES = [100, 101, 103, 201, 203];

/** One case's images: img.qcow2 (the image fought over), src.qcow2 (as large, with data), and scratch names. */
async function images(dir: string): Promise<void> {
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'img.qcow2'), String(16 * MiB));
  await qemuIo(join(dir, 'img.qcow2'), ['write -P 0x11 0 16M']);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), String(16 * MiB));
  await qemuIo(join(dir, 'src.qcow2'), ['write -P 0x22 0 16M']);
}

interface Holder {
  name: string;
  /** The program a refusal names (its /proc comm). */
  program: string;
  bytes: number[];
  start(dir: string): ChildProcess;
}

const img = (dir: string) => join(dir, 'img.qcow2');

/** QEMU holding img.qcow2, each as the kernel's lock table shows it. */
const QEMU_HOLDERS: Holder[] = [
  { name: 'qemu-io -f raw (read-write)', program: 'qemu-io', bytes: [100, 101], start: (d) => spawn('qemu-io', ['-f', 'raw', img(d)], { stdio: 'pipe' }) },
  { name: 'qemu-io -r -f raw', program: 'qemu-io', bytes: [100], start: (d) => spawn('qemu-io', ['-r', '-f', 'raw', img(d)], { stdio: 'pipe' }) },
  { name: 'qemu-io -f qcow2 (read-write)', program: 'qemu-io', bytes: WRITER_BYTES, start: (d) => spawn('qemu-io', ['-f', 'qcow2', img(d)], { stdio: 'pipe' }) },
  { name: 'qemu-nbd -f raw (read-write)', program: 'qemu-nbd', bytes: [100, 101, 203], start: (d) => spawn('qemu-nbd', ['-f', 'raw', '-k', join(d, 'nbd.sock'), img(d)], { stdio: 'pipe' }) },
  { name: 'qemu-nbd -r -f raw', program: 'qemu-nbd', bytes: [100, 203], start: (d) => spawn('qemu-nbd', ['-r', '-f', 'raw', '-k', join(d, 'nbd.sock'), img(d)], { stdio: 'pipe' }) },
  { name: "qemu-img convert's source", program: 'qemu-img', bytes: READER_BYTES, start: (d) => spawn('qemu-img', ['convert', '-r', '1M', '-O', 'raw', img(d), join(d, 'out.raw')], { stdio: 'pipe' }) },
];

/** diskmirror holding img.qcow2, and the QEMU tool that takes the same bytes. */
const DISKMIRROR_HOLDERS: { role: string; diskmirror: Holder; qemu: Holder }[] = [
  {
    role: 'reader',
    diskmirror: { name: "diskmirror mirror's source", program: 'diskmirror', bytes: READER_BYTES, start: (d) => spawn(process.execPath, [BIN, 'mirror', '--speed', '1M', 'img.qcow2', 'out.raw'], { cwd: d, stdio: 'pipe' }) },
    qemu: QEMU_HOLDERS[5]!,
  },
  {
    role: 'writer',
    diskmirror: { name: "diskmirror mirror's target", program: 'diskmirror', bytes: WRITER_BYTES, start: (d) => spawn(process.execPath, [BIN, 'mirror', '--speed', '1M', 'src.qcow2', 'img.qcow2'], { cwd: d, stdio: 'pipe' }) },
    qemu: QEMU_HOLDERS[2]!,
  },
];

/** Starts `holder` on a fresh case, runs `fn` while it holds img.qcow2, then stops it. */
async function whileHeld<T>(holder: Holder, fn: (dir: string, pid: number) => Promise<T>): Promise<T> {
  const dir = workdir();
  await images(dir);
  const child = holder.start(dir);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('close', resolve));
  try {
    await untilLocked(img(dir), holder.bytes, child, `${holder.name} (stderr: ${stderr.trim()})`);
    return await fn(dir, child.pid!);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

describe("QEMU holds an image: diskmirror's reader and writer meet what QEMU's own meet", () => {
  // Each line: the holder, then what a reader and a writer meet (QEMU's words).
  const expected: Record<string, [reader: string, writer: string]> = {
    'qemu-io -f raw (read-write)': ['Failed to get shared "write" lock', 'Failed to get shared "write" lock'],
    'qemu-io -r -f raw': ['accepted', 'accepted'],
    'qemu-io -f qcow2 (read-write)': ['Failed to get shared "write" lock', 'Failed to get "write" lock'],
    'qemu-nbd -f raw (read-write)': ['Failed to get shared "write" lock', 'Failed to get "resize" lock'],
    'qemu-nbd -r -f raw': ['accepted', 'Failed to get "resize" lock'],
    "qemu-img convert's source": ['accepted', 'Failed to get "write" lock'],
  };

  for (const holder of QEMU_HOLDERS) {
    it(`${holder.name}`, async () => {
      await whileHeld(holder, async (dir, pid) => {
        const qemuReader = qemuTries('qemu-img', ['convert', '-O', 'raw', img(dir), join(dir, 'q-copy.raw')]);
        const qemuWriter = qemuTries('qemu-img', ['convert', '-n', '-O', 'qcow2', join(dir, 'src.qcow2'), img(dir)]);
        expect([qemuReader, qemuWriter], "QEMU's own reader and writer").toEqual(expected[holder.name]);
        const reader = await diskmirrorTries(['convert', '-O', 'raw', 'img.qcow2', 'dm-copy.raw'], dir);
        const writer = await diskmirrorTries(['convert', '-n', '-O', 'qcow2', 'src.qcow2', 'img.qcow2'], dir);
        expect([reader.outcome, writer.outcome], "diskmirror's reader and writer").toEqual([qemuReader, qemuWriter]);
        // A refusal names the holder: its program and pid.
        for (const r of [reader, writer]) if (r.outcome !== 'accepted') expect(r.stderr).toContain(`by ${holder.program} (pid ${pid})`);
        // -U reads without a lock, whoever holds the image (as qemu-img -U).
        const peek = await run(['map', '-U', '--output=json', 'img.qcow2'], undefined, { cwd: dir });
        expect(peek.code, peek.stderr).toBe(0);
      });
    });
  }
});

describe("diskmirror holds an image: QEMU's tools meet what they meet against QEMU's own", () => {
  const tryers: { name: string; args: (dir: string) => [string, string[]] }[] = [
    { name: 'qemu-img convert (reads)', args: (d) => ['qemu-img', ['convert', '-O', 'raw', img(d), join(d, `copy${n++}.raw`)]] },
    { name: 'qemu-img convert -n -O qcow2 (writes)', args: (d) => ['qemu-img', ['convert', '-n', '-O', 'qcow2', join(d, 'src.qcow2'), img(d)]] },
    { name: 'qemu-io -r -f raw', args: (d) => ['qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', img(d)]] },
    { name: 'qemu-io -f raw (writes)', args: (d) => ['qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 8M 4k', img(d)]] },
    { name: 'qemu-img info', args: (d) => ['qemu-img', ['info', img(d)]] },
    { name: 'qemu-img map -U', args: (d) => ['qemu-img', ['map', '-U', img(d)]] },
    { name: 'qemu-nbd -r -f raw', args: (d) => ['qemu-nbd', ['--fork', '--pid-file', join(d, `nbd${n}.pid`), '-r', '-f', 'raw', '-k', join(d, `nbd${n++}.sock`), img(d)]] },
  ];
  // Each tryer's answer against a reader and against a writer (QEMU's words).
  const expected: Record<string, Record<string, string>> = {
    reader: {
      'qemu-img convert (reads)': 'accepted',
      'qemu-img convert -n -O qcow2 (writes)': 'Failed to get "write" lock',
      'qemu-io -r -f raw': 'accepted',
      'qemu-io -f raw (writes)': 'Failed to get "write" lock',
      'qemu-img info': 'accepted',
      'qemu-img map -U': 'accepted',
      'qemu-nbd -r -f raw': 'accepted',
    },
    writer: {
      'qemu-img convert (reads)': 'Failed to get shared "write" lock',
      'qemu-img convert -n -O qcow2 (writes)': 'Failed to get "write" lock',
      'qemu-io -r -f raw': 'accepted',
      'qemu-io -f raw (writes)': 'Failed to get "write" lock',
      'qemu-img info': 'Failed to get shared "write" lock',
      'qemu-img map -U': 'accepted',
      'qemu-nbd -r -f raw': 'Failed to get shared "resize" lock',
    },
  };

  for (const { role, diskmirror, qemu } of DISKMIRROR_HOLDERS) {
    it(`diskmirror as a ${role} (against ${qemu.name})`, async () => {
      const against = async (holder: Holder) =>
        whileHeld(holder, async (dir) => Object.fromEntries(tryers.map((t) => [t.name, qemuTries(...t.args(dir))])));
      const qemuAnswers = await against(qemu);
      expect(qemuAnswers, `against ${qemu.name}`).toEqual(expected[role]);
      expect(await against(diskmirror), `against ${diskmirror.name}`).toEqual(qemuAnswers);
    });
  }
});

describe('what a person sees', () => {
  it("qemu-io cannot write a mirror's source while the mirror runs; the mirror ends with a target equal to its source", async () => {
    const dir = workdir();
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 's.raw'), String(8 * MiB));
    await qemuIo(join(dir, 's.raw'), ['write -P 0x11 0 8M'], ['-f', 'raw']);
    const mirror = spawn(process.execPath, [BIN, 'mirror', '--speed', '2M', 's.raw', 't.raw'], { cwd: dir, stdio: 'pipe' });
    const exited = new Promise<number | null>((resolve) => mirror.on('close', resolve));
    await untilLocked(join(dir, 's.raw'), READER_BYTES, mirror, 'the mirror');
    const io = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 1M', join(dir, 's.raw')], { encoding: 'utf8' });
    expect(io.status).toBe(1);
    expect(io.stderr).toMatch(/Failed to get "write" lock/);
    // The target is being written: qemu-img convert may not read it, -U may look.
    expect(qemuTries('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', join(dir, 't.raw'), join(dir, 'copy.raw')])).toBe('Failed to get shared "write" lock');
    expect(qemuTries('qemu-img', ['map', '-U', '-f', 'raw', join(dir, 't.raw')])).toBe('accepted');
    expect(await exited).toBe(0);
    expect((await qemuCompare(join(dir, 's.raw'), join(dir, 't.raw'))).code).toBe(0);
  });

  it('info, convert and mirror refuse an image qemu-io or qemu-nbd writes, naming it, in one line', async () => {
    for (const holder of [QEMU_HOLDERS[0]!, QEMU_HOLDERS[3]!]) {
      await whileHeld(holder, async (dir, pid) => {
        for (const args of [['info', 'img.qcow2'], ['convert', 'img.qcow2', 'c.raw'], ['mirror', 'img.qcow2', 'm.raw']]) {
          const r = await run(args, undefined, { cwd: dir });
          expect(r.code, args.join(' ')).toBe(1);
          expect(r.stderr).toBe(`diskmirror ${args[0]}: Failed to get shared "write" lock: img.qcow2 is being written by ${holder.program} (pid ${pid})\n`);
          expect(existsSync(join(dir, args[2] ?? 'none'))).toBe(false);
        }
        // So does a diskmirror without the native lock calls: it sees QEMU's locks all the same.
        const files = await run(['info', 'img.qcow2'], undefined, { cwd: dir, env: { DISKMIRROR_LOCKS: 'files' } });
        expect(files.stderr).toBe(`diskmirror info: Failed to get shared "write" lock: img.qcow2 is being written by ${holder.program} (pid ${pid})\n`);
      });
    }
  });
});
