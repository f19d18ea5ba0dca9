/**
 * Never destroy the user's data: each slip a person can make with the
 * command, run exactly as typed, is refused (or done right), and every file
 * that should not change is byte-identical afterwards (hashes before and
 * after). qemu-img 7.2's answer to the same slip is the model.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { run, QmpSession, BIN } from '../helpers/cli.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, requireQemu } from '../helpers/qemu.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

const MiB = 1 << 20;
let root: string;
let n = 0;

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  root = mkdtempSync(join(tmpdir(), 'diskmirror-safety-'));
});
afterAll(() => root && rmSync(root, { recursive: true, force: true }));

/** A fresh directory for one case. */
function workdir(): string {
  const dir = join(root, `case${n++}`);
  mkdirSync(dir);
  return dir;
}

/** Every entry of a directory: a file's SHA-256, a symlink's target. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isSymbolicLink()) out[name] = `-> ${readlinkSync(path)}`;
    else if (st.isFile()) out[name] = createHash('sha256').update(readFileSync(path)).digest('hex');
    else out[name] = st.isFIFO() ? 'fifo' : 'other';
  }
  return out;
}

/** A raw image of `bytes` with a byte pattern over its first `dataBytes`. */
async function rawImage(path: string, bytes: number, fill: number, dataBytes = bytes): Promise<void> {
  await qemuImg('create', '-q', '-f', 'raw', path, String(bytes));
  if (dataBytes > 0) await qemuIo(path, [`write -P ${fill} 0 ${dataBytes}`], ['-f', 'raw']);
}

const dm = (args: string[], cwd?: string, env?: Record<string, string>) => run(args, undefined, { ...(cwd ? { cwd } : {}), ...(env ? { env } : {}) });

describe('one file on both sides', () => {
  it('convert c.raw c.raw (and ./c.raw, a symlink, a hard link) is refused, exit 1, c.raw unchanged', async () => {
    const dir = workdir();
    await rawImage(join(dir, 'c.raw'), 8 * MiB, 0xab, 4 * MiB);
    symlinkSync('c.raw', join(dir, 'link.raw'));
    linkSync(join(dir, 'c.raw'), join(dir, 'hard.raw'));
    const before = snapshot(dir);
    for (const [src, dst] of [['c.raw', 'c.raw'], ['c.raw', './c.raw'], ['c.raw', 'link.raw'], ['hard.raw', 'c.raw'], ['link.raw', 'hard.raw']] as const) {
      const r = await dm(['convert', src, dst], dir);
      expect(r.code, `${src} ${dst}: ${r.stderr}`).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/is the same file as the source|is both the source and the target \(the same file\)/);
      expect(snapshot(dir)).toEqual(before);
    }
  });

  it('convert -O qcow2 x.qcow2 x.qcow2 and mirror x.qcow2 x.qcow2 are refused; the qcow2 source is intact', async () => {
    const dir = workdir();
    const x = join(dir, 'x.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', x, String(8 * MiB));
    await qemuIo(x, ['write -P 0x5a 1M 2M']);
    const before = snapshot(dir);
    for (const args of [['convert', '-O', 'qcow2', 'x.qcow2', 'x.qcow2'], ['mirror', 'x.qcow2', 'x.qcow2'], ['mirror', '--qmp', 'x.qcow2', './x.qcow2']]) {
      const r = await dm(args, dir);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/the same file/);
      expect(snapshot(dir)).toEqual(before);
    }
    expect((await qemuCheck(x)).code).toBe(0);
  });

  it("convert ovl.qcow2 bk.raw, where bk.raw is ovl.qcow2's backing file, is refused; both unchanged", async () => {
    const dir = workdir();
    await rawImage(join(dir, 'bk.raw'), 8 * MiB, 0x11);
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'bk.raw', '-F', 'raw', join(dir, 'ovl.qcow2'));
    await qemuIo(join(dir, 'ovl.qcow2'), ['write -P 0x22 0 64k']);
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'ovl.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'));
    const before = snapshot(dir);
    for (const args of [['convert', 'ovl.qcow2', 'bk.raw'], ['convert', '-O', 'qcow2', 'top.qcow2', 'ovl.qcow2'], ['convert', 'top.qcow2', 'bk.raw'], ['mirror', 'top.qcow2', 'bk.raw'], ['mirror', '--sync', 'top', '-O', 'qcow2', 'top.qcow2', 'ovl.qcow2']]) {
      const r = await dm(args, dir);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/is (the|a) backing file of the source/);
      expect(snapshot(dir)).toEqual(before);
    }
  });

  it('create -f qcow2 -b x.raw -F raw x.raw is refused before anything is printed or touched', async () => {
    const dir = workdir();
    await rawImage(join(dir, 'x.raw'), 8 * MiB, 0x33);
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'x.raw', '-F', 'raw', join(dir, 'y.qcow2'));
    const before = snapshot(dir);
    for (const args of [['create', '-f', 'qcow2', '-b', 'x.raw', '-F', 'raw', 'x.raw'], ['create', '-f', 'qcow2', '-b', './x.raw', '-F', 'raw', 'x.raw'], ['create', '-f', 'qcow2', '-b', 'y.qcow2', '-F', 'qcow2', 'x.raw']]) {
      const r = await dm(args, dir);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout).toEqual(args.includes('y.qcow2') ? expect.stringContaining('Formatting') : '');
      expect(r.stderr).toMatch(/same filename as the backing file/);
      expect(snapshot(dir)).toEqual(before);
    }
  });
});

describe('locks: one writer at a time', () => {
  /** Starts a slow mirror into `dst` and resolves once it is copying. */
  async function slowMirror(dir: string, src: string, dst: string, env?: Record<string, string>) {
    const s = new QmpSession(['mirror', '--qmp', '--speed', '8M', src, dst], { cwd: dir, ...(env ? { env } : {}) });
    await s.status('running');
    await s.waitFor(() => existsSync(join(dir, `${dst}.dmcheckpoint`)));
    return s;
  }

  /** Kernel locks (the usual build), or lock files alone (DISKMIRROR_LOCKS=files, as a build without the native lock calls). */
  const ENV = { kernel: undefined, 'lock files': { DISKMIRROR_LOCKS: 'files' } } as const;
  for (const [firstMode, secondMode, rounds] of [['kernel', 'kernel', 5], ['lock files', 'lock files', 5], ['kernel', 'lock files', 2], ['lock files', 'kernel', 2]] as const) {
    const modes = firstMode === secondMode ? firstMode : `${firstMode}, then ${secondMode}`;
    it(`two mirrors (or a mirror and a convert) into one qcow2, ${rounds} times (${modes}): the second is refused naming the holder; the target equals the first source and checks clean`, async () => {
      for (let round = 0; round < rounds; round++) {
        const dir = workdir();
        await rawImage(join(dir, 'a.raw'), 16 * MiB, 0xaa);
        await rawImage(join(dir, 'b.raw'), 16 * MiB, 0xbb);
        await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 't.qcow2'), String(16 * MiB));
        const first = await slowMirror(dir, 'a.raw', 't.qcow2', ENV[firstMode]);
        const pid = first.child.pid!;
        const env = ENV[secondMode];
        const second = round % 2 === 0 ? await dm(['mirror', 'b.raw', 't.qcow2'], dir, env) : await dm(['convert', '-O', 'qcow2', 'b.raw', 't.qcow2'], dir, env);
        expect(second.code, second.stderr).toBe(1);
        expect(second.stderr.trim()).toMatch(new RegExp(`Failed to get "write" lock: t\\.qcow2 is in use by diskmirror \\(pid ${pid}\\)$`));
        // A reader is refused too while the job writes (QEMU's "Failed to get shared "write" lock").
        const reader = await dm(['info', 't.qcow2'], dir, env);
        expect(reader.code).toBe(1);
        expect(reader.stderr).toMatch(/Failed to get shared "write" lock: t\.qcow2 is being written by diskmirror/);
        // -U looks without a lock, as qemu-img -U.
        const peek = await dm(['map', '-U', '--output=json', 't.qcow2'], dir, env);
        expect(peek.code, peek.stderr).toBe(0);
        await first.execute('block-job-set-speed', { device: 'mirror', speed: 0 });
        await first.event('BLOCK_JOB_READY');
        await first.execute('job-complete', { id: 'mirror' });
        expect((await first.close()).code).toBe(0);
        expect((await qemuCompare(join(dir, 'a.raw'), join(dir, 't.qcow2'))).code).toBe(0);
        const check = await qemuCheck(join(dir, 't.qcow2'));
        expect(check.code, check.stderr).toBe(0);
        // Nothing is left behind: no lock files, no temporary files, no checkpoint.
        expect(readdirSync(dir).sort()).toEqual(['a.raw', 'b.raw', 't.qcow2']);
      }
    });
  }

  for (const [firstMode, secondMode] of [['lock files', 'lock files'], ['lock files', 'kernel'], ['kernel', 'lock files']] as const) {
    it(`a mirror that creates its target holds it under its own name once it is renamed into place (${firstMode}, then ${secondMode}): convert -n into it is refused; the target equals the source`, async () => {
      const dir = workdir();
      await rawImage(join(dir, 'a.raw'), 16 * MiB, 0xaa);
      await rawImage(join(dir, 'b.raw'), 16 * MiB, 0xbb);
      const first = await slowMirror(dir, 'a.raw', 't.raw', ENV[firstMode]);
      expect(readdirSync(dir).filter((f) => f.includes('.dmpart-'))).toEqual([]);
      const second = await dm(['convert', '-n', 'b.raw', 't.raw'], dir, ENV[secondMode]);
      expect(second.code, second.stderr).toBe(1);
      expect(second.stderr.trim()).toBe(`diskmirror convert: Failed to get "write" lock: t.raw is in use by diskmirror (pid ${first.child.pid})`);
      if (firstMode === 'kernel') {
        // Kernel locks follow the file: a hard link to it is refused too, whatever the other's build.
        linkSync(join(dir, 't.raw'), join(dir, 'hard.raw'));
        const viaLink = await dm(['convert', '-n', 'b.raw', 'hard.raw'], dir, ENV[secondMode]);
        expect(viaLink.stderr.trim()).toBe(`diskmirror convert: Failed to get "write" lock: hard.raw is in use by diskmirror (pid ${first.child.pid})`);
        rmSync(join(dir, 'hard.raw'));
      }
      await first.execute('block-job-set-speed', { device: 'mirror', speed: 0 });
      await first.event('BLOCK_JOB_READY');
      await first.execute('job-complete', { id: 'mirror' });
      expect((await first.close()).code).toBe(0);
      expect((await qemuCompare(join(dir, 'a.raw'), join(dir, 't.raw'))).code).toBe(0);
      expect(readdirSync(dir).sort()).toEqual(['a.raw', 'b.raw', 't.raw']);
    });
  }

  it('QEMU and diskmirror see each other: qemu-img may not read an image diskmirror writes, diskmirror may not write one qemu-io has open', async () => {
    const dir = workdir();
    await rawImage(join(dir, 'a.raw'), 16 * MiB, 0xaa);
    await rawImage(join(dir, 'q.raw'), 16 * MiB, 0x44);
    const s = await slowMirror(dir, 'a.raw', 'd.raw');
    const qemu = spawnSync('qemu-img', ['convert', '-O', 'raw', join(dir, 'd.raw'), join(dir, 'q-copy.raw')], { encoding: 'utf8' });
    expect(qemu.status).toBe(1);
    expect(qemu.stderr).toMatch(/Failed to get shared "write" lock/);
    s.child.kill('SIGTERM');
    expect((await s.exited).code).toBe(130);
    // qemu-io holds q.raw open (read-write, with QEMU's byte locks) while it waits for commands.
    const io = spawn('qemu-io', ['-f', 'raw', join(dir, 'q.raw')], { stdio: ['pipe', 'pipe', 'pipe'] });
    const inode = statSync(join(dir, 'q.raw')).ino;
    for (let i = 0; i < 100 && !new RegExp(`OFDLCK.*:${inode} `).test(readFileSync('/proc/locks', 'utf8')); i++) await new Promise((r) => setTimeout(r, 50));
    const before = snapshot(dir);
    const r = await dm(['convert', 'a.raw', 'q.raw'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`diskmirror convert: Failed to get shared "write" lock: q.raw is being written by qemu-io (pid ${io.pid})\n`);
    io.stdin.end('quit\n');
    await new Promise((resolve) => io.on('close', resolve));
    expect(snapshot(dir)).toEqual(before);
  });

  it('stale lock files (their process gone, as after kill -9) are taken over and swept, a writer\'s and readers\'', async () => {
    const dir = workdir();
    await rawImage(join(dir, 'a.raw'), 4 * MiB, 0xaa);
    // Locks left by a process that no longer exists (pid 2^22 + 1 is beyond Linux's pid range).
    for (const name of ['d.raw.dmlock', 'd.raw.dmlock.4194305.0', 'a.raw.dmlock.4194305.1']) {
      const fd = openSync(join(dir, name), 'wx');
      writeSync(fd, JSON.stringify({ pid: 4194305, mode: name === 'd.raw.dmlock' ? 'exclusive' : 'shared' }));
      closeSync(fd);
    }
    await rawImage(join(dir, 'd.raw'), 4 * MiB, 0);
    const r = await dm(['mirror', 'a.raw', 'd.raw'], dir, { DISKMIRROR_LOCKS: 'files' });
    expect(r.code, r.stderr).toBe(0);
    expect((await qemuCompare(join(dir, 'a.raw'), join(dir, 'd.raw'))).code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['a.raw', 'd.raw']);
  });
});

describe('resume cannot be fooled', () => {
  /** A mirror interrupted (SIGINT) once it has copied something. */
  async function interrupted(dir: string, extra: string[] = []): Promise<void> {
    const s = new QmpSession(['mirror', '--qmp', '--speed', '8M', ...extra, 's.raw', 'd.raw'], { cwd: dir });
    await s.waitFor(() => existsSync(join(dir, 'd.raw.dmcheckpoint')));
    s.child.kill('SIGINT');
    expect((await s.exited).code).toBe(130);
  }

  it('--resume after the source changed, or the target, is refused naming what changed; the same command line with --resume added goes on', async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 32 * MiB, 0x61, 24 * MiB);
    await interrupted(dir, ['--granularity', '128K', '--on-source-error', 'ignore']);
    // Rerun as a person does: up-arrow, add --resume.
    const same = await dm(['mirror', '--granularity', '128K', '--on-source-error', 'ignore', '--resume', 's.raw', 'd.raw'], dir);
    expect(same.code, same.stderr).toBe(0);
    expect((await qemuCompare(join(dir, 's.raw'), join(dir, 'd.raw'))).code).toBe(0);

    rmSync(join(dir, 'd.raw'));
    await interrupted(dir);
    await qemuIo(join(dir, 's.raw'), ['write -P 0x77 30M 4k'], ['-f', 'raw']);
    let before = snapshot(dir);
    const src = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(src.code).toBe(1);
    expect(src.stderr).toMatch(/cannot resume: the source .*s\.raw was modified at .* after the checkpoint .*; delete .*d\.raw\.dmcheckpoint and run the mirror again without --resume/);
    expect(snapshot(dir)).toEqual(before);

    rmSync(join(dir, 'd.raw'));
    rmSync(join(dir, 'd.raw.dmcheckpoint'));
    await interrupted(dir);
    await qemuIo(join(dir, 'd.raw'), ['write -P 0x77 30M 4k'], ['-f', 'raw']);
    before = snapshot(dir);
    const dst = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(dst.code).toBe(1);
    expect(dst.stderr).toMatch(/cannot resume: the target .*d\.raw was modified at/);
    expect(snapshot(dir)).toEqual(before);

    // Options that differ are each named.
    const opts = await dm(['mirror', '--resume', '--granularity', '4K', '--copy-mode', 'write-blocking', 's.raw', 'd.raw'], dir);
    expect(opts.code).toBe(2);
    expect(opts.stderr).toMatch(/these differ: --granularity 4K \(the job started with 65536\), --copy-mode write-blocking \(the job started with background\)/);
  });

  it("after a kill, the job's own late writes do not block the resume; a change made afterwards does", async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 32 * MiB, 0x62, 24 * MiB);
    const kill = async () => {
      const s = new QmpSession(['mirror', '--qmp', '--speed', '8M', '--checkpoint-interval', '0.2', 's.raw', 'd.raw'], { cwd: dir });
      await s.waitFor(() => existsSync(join(dir, 'd.raw.dmcheckpoint')));
      await new Promise((r) => setTimeout(r, 500));
      s.child.kill('SIGKILL');
      await s.exited;
    };
    await kill();
    const ok = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await qemuCompare(join(dir, 's.raw'), join(dir, 'd.raw'))).code).toBe(0);

    rmSync(join(dir, 'd.raw'));
    await kill();
    await new Promise((r) => setTimeout(r, 3000));
    await qemuIo(join(dir, 'd.raw'), ['write -P 0x77 0 4k'], ['-f', 'raw']);
    const before = snapshot(dir);
    const r = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot resume: the target .*d\.raw was modified at .* after the job stopped/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('a guest write marks the checkpoint before it goes ahead: after a kill, the resume is refused even where the source looks untouched', async () => {
    const dir = workdir();
    const src = join(dir, 's.raw');
    await rawImage(src, 32 * MiB, 0x63, 24 * MiB);
    const sidecar = join(dir, 'd.raw.dmcheckpoint');
    const s = new QmpSession(['mirror', '--qmp', '--speed', '4M', '--checkpoint-interval', '60', 's.raw', 'd.raw'], { cwd: dir });
    await s.waitFor(() => existsSync(sidecar));
    expect((JSON.parse(readFileSync(sidecar, 'utf8')) as { sourceWriting?: boolean }).sourceWriting).toBeUndefined();
    // What the guest's write will cover, and the file's time, as the checkpoint found them.
    const original = readFileSync(src).subarray(MiB, MiB + 8192);
    const { mtimeNs } = statSync(src, { bigint: true });
    expect(await s.execute('x-source-write', { device: 'mirror', offset: MiB, bytes: 8192, pattern: 0x5a })).toHaveProperty('return');
    // Acknowledged, so the mark is on disk already (the next checkpoint is a minute away).
    expect((JSON.parse(readFileSync(sidecar, 'utf8')) as { sourceWriting?: boolean }).sourceWriting).toBe(true);
    s.child.kill('SIGKILL');
    await s.exited;
    // As a power loss can leave it: the write lost, and the file's time with it. No stamp can tell.
    const fd = openSync(src, 'r+');
    writeSync(fd, original, 0, original.length, MiB);
    closeSync(fd);
    const ns = mtimeNs.toString().padStart(10, '0');
    expect(spawnSync('touch', ['-m', '-d', `@${ns.slice(0, -9)}.${ns.slice(-9)}`, src]).status).toBe(0);
    const before = snapshot(dir);
    const r = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot resume: a guest was writing the source .*s\.raw after the last checkpoint, and after a crash nothing tells which of those writes reached it; delete .*d\.raw\.dmcheckpoint and run the mirror again without --resume/);
    expect(snapshot(dir)).toEqual(before);
    // Started again, the mirror copies what the source holds now.
    rmSync(sidecar);
    rmSync(join(dir, 'd.raw'));
    const again = await dm(['mirror', 's.raw', 'd.raw'], dir);
    expect(again.code, again.stderr).toBe(0);
    expect((await qemuCompare(src, join(dir, 'd.raw'))).code).toBe(0);
  });

  it('a resumed raw target stays as sparse as a fresh run leaves it', async () => {
    const dir = workdir();
    // 6 MiB of data spread over a 64 MiB image.
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 's.raw'), String(64 * MiB));
    await qemuIo(join(dir, 's.raw'), ['write -P 0x31 0 2M', 'write -P 0x32 20M 2M', 'write -P 0x33 60M 2M'], ['-f', 'raw']);
    const fresh = await dm(['mirror', 's.raw', 'fresh.raw'], dir);
    expect(fresh.code, fresh.stderr).toBe(0);
    await interrupted(dir);
    const r = await dm(['mirror', '--resume', 's.raw', 'd.raw'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect((await qemuCompare(join(dir, 's.raw'), join(dir, 'd.raw'))).code).toBe(0);
    const used = (name: string) => statSync(join(dir, name)).blocks * 512;
    expect(used('fresh.raw')).toBeLessThanOrEqual(7 * MiB);
    expect(used('d.raw')).toBeLessThanOrEqual(used('fresh.raw'));
  });

  it('a job that reached COMPLETED exits 0 and leaves no checkpoint, though stdin closes right after', async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 8 * MiB, 0x63);
    const done = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'mirror', '--qmp', 's.raw', 'd.raw'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
      child.stdin.write('{"execute":"qmp_capabilities"}\n');
      let stdout = '';
      child.stdout.on('data', (d) => {
        stdout += d;
        if (/BLOCK_JOB_READY/.test(stdout) && !child.stdin.writableEnded) child.stdin.end('{"execute":"job-complete","arguments":{"id":"mirror"}}\n');
      });
      child.on('close', (code) => resolve({ code, stdout }));
    });
    expect(done.stdout).toMatch(/BLOCK_JOB_COMPLETED/);
    expect(done.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['d.raw', 's.raw']);
  });
});

describe('files made safely', () => {
  it('symlinks planted at DST.creating and DST.dmcheckpoint.tmp are never followed', async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 8 * MiB, 0x41);
    await rawImage(join(dir, 'victim.raw'), 1 * MiB, 0x42);
    for (const planted of ['d.raw.creating', 'd.raw.dmcheckpoint.tmp', 'd.raw.dmpart-1-0']) symlinkSync('victim.raw', join(dir, planted));
    const victim = snapshot(dir)['victim.raw'];
    const r = await dm(['mirror', '--checkpoint-interval', '0.05', 's.raw', 'd.raw'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(snapshot(dir)['victim.raw']).toBe(victim);
    expect((await qemuCompare(join(dir, 's.raw'), join(dir, 'd.raw'))).code).toBe(0);
    const c = await dm(['convert', '-O', 'qcow2', 's.raw', 'd.raw'], dir);
    expect(c.code, c.stderr).toBe(0);
    expect(snapshot(dir)['victim.raw']).toBe(victim);
    for (const planted of ['d.raw.creating', 'd.raw.dmcheckpoint.tmp', 'd.raw.dmpart-1-0']) expect(lstatSync(join(dir, planted)).isSymbolicLink()).toBe(true);
  });

  it('an option refused after the target would have been created (--granularity 3000) leaves nothing behind', async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 8 * MiB, 0x43);
    const before = snapshot(dir);
    for (const args of [['mirror', '--granularity', '3000', 's.raw', 'new.raw'], ['convert', '--granularity', '3000', 's.raw', 'new.raw'], ['mirror', '--buf-size', '-1', 's.raw', 'new.raw'], ['mirror', '--id', '9bad', 's.raw', 'new.raw'], ['convert', '-c', 's.raw', 'new.raw']]) {
      const r = await dm(args, dir);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(snapshot(dir)).toEqual(before);
    }
  });

  it('a convert that fails leaves the old DST as it was; a mirror that fails before writing removes the target it made', async () => {
    const dir = workdir();
    await rawImage(join(dir, 's.raw'), 8 * MiB, 0x44);
    await rawImage(join(dir, 'old.raw'), 8 * MiB, 0x45);
    const before = snapshot(dir);
    const r = await dm(['mirror', '--inject', 'source:read:EIO:0-', 's.raw', 'made.raw'], dir);
    expect(r.code).toBe(1);
    expect(snapshot(dir)).toEqual(before);
    const c = await dm(['convert', 'nope.raw', 'old.raw'], dir);
    expect(c.code).toBe(1);
    expect(snapshot(dir)).toEqual(before);
  });
});

describe('the source is only read', () => {
  it('mirror --qmp leaves a dirty lazy-refcounts qcow2 source byte-identical (no repair on a read-only open)', async () => {
    const dir = workdir();
    const src = join(dir, 's.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', src, String(8 * MiB));
    await qemuIo(src, ['write -P 0x51 0 3M']);
    // Set the dirty bit (incompatible feature bit 0, the last byte of the big-endian field at 72), as a crash under lazy refcounts leaves it.
    const fd = openSync(src, 'r+');
    const last = readFileSync(src).subarray(79, 80);
    last[0] = last[0]! | 1;
    writeSync(fd, last, 0, 1, 79);
    closeSync(fd);
    expect((await qemuImg('info', '--output=json', src)).replace(/\s/g, '')).toContain('"dirty-flag":true');
    const before = snapshot(dir)['s.qcow2'];
    const s = new QmpSession(['mirror', '--qmp', 's.qcow2', 'd.qcow2'], { cwd: dir });
    await s.event('BLOCK_JOB_READY');
    await s.execute('job-complete', { id: 'mirror' });
    expect((await s.close()).code).toBe(0);
    expect(snapshot(dir)['s.qcow2']).toBe(before);
    expect((await qemuCompare(src, join(dir, 'd.qcow2'))).code).toBe(0);
  });

  it('a source on a read-only mount mirrors fine (plain and --qmp); x-source-write then fails cleanly', async () => {
    const dir = workdir();
    const ro = join(dir, 'ro');
    mkdirSync(ro);
    await rawImage(join(ro, 's.raw'), 8 * MiB, 0x52);
    // A read-only bind mount in a private mount namespace (no privileges needed with user namespaces).
    const inNamespace = (args: string) =>
      spawnSync('unshare', ['-rm', 'sh', '-c', `mount --bind ${ro} ${ro} && mount -o remount,bind,ro ${ro} && ${args}`], { cwd: dir, encoding: 'utf8', input: '' });
    const plain = inNamespace(`${process.execPath} ${BIN} mirror ro/s.raw d1.raw`);
    expect(plain.status, plain.stderr).toBe(0);
    expect((await qemuCompare(join(ro, 's.raw'), join(dir, 'd1.raw'))).code).toBe(0);
    const qmp = spawnSync('unshare', ['-rm', 'sh', '-c', `mount --bind ${ro} ${ro} && mount -o remount,bind,ro ${ro} && ${process.execPath} ${BIN} mirror --qmp ro/s.raw d2.raw`], {
      cwd: dir,
      encoding: 'utf8',
      input: ['{"execute":"qmp_capabilities"}', '{"execute":"x-source-write","arguments":{"device":"mirror","offset":0,"bytes":4096,"pattern":1},"id":1}', '{"execute":"query-block-jobs","id":2}', ''].join('\n'),
    });
    const answers = qmp.stdout.split('\n').filter((l) => l.includes('"id"')).map((l) => JSON.parse(l) as { id: number; error?: { desc: string } });
    expect(answers.find((a) => a.id === 1)?.error?.desc).toMatch(/EROFS|read-only/i);
    expect(answers.find((a) => a.id === 2)).toHaveProperty('return');
  });
});

describe('hostile files', () => {
  it('a backing file that is a FIFO, a socket or a directory is refused at once by info, check, map and convert', async () => {
    const dir = workdir();
    spawnSync('mkfifo', [join(dir, 'fifo.raw')]);
    mkdirSync(join(dir, 'dir.raw'));
    const server = createServer().listen(join(dir, 'sock.raw'));
    await new Promise((r) => server.once('listening', r));
    const kind: Record<string, RegExp> = { 'fifo.raw': /is a FIFO, not an image file/, 'dir.raw': /is a directory, not an image file/, 'sock.raw': /is a socket, not an image file/ };
    for (const backing of ['fifo.raw', 'dir.raw', 'sock.raw']) {
      await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'raw', join(dir, `on-${backing}.qcow2`), String(8 * MiB));
      for (const cmd of [['info'], ['check'], ['map'], ['convert', '-O', 'raw']]) {
        const args = [...cmd, `on-${backing}.qcow2`, ...(cmd[0] === 'convert' ? ['out.raw'] : [])];
        const started = Date.now();
        const r = await dm(args, dir);
        expect(r.code, args.join(' ')).not.toBe(0);
        expect(r.stderr, args.join(' ')).toMatch(kind[backing]!);
        expect(Date.now() - started).toBeLessThan(10_000);
      }
      expect(existsSync(join(dir, 'out.raw'))).toBe(false);
    }
    for (const file of ['fifo.raw', 'sock.raw', 'dir.raw']) {
      const r = await dm(['convert', file, 'out.raw'], dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(kind[file]!);
    }
    server.close();
  });
});

describe('qemu-img parity where users parse output', () => {
  it('map shows the holes of a raw file, with the offsets qemu-img map prints', async () => {
    const dir = workdir();
    const path = join(dir, 'sparse.raw');
    await qemuImg('create', '-q', '-f', 'raw', path, String(8 * MiB));
    await qemuIo(path, ['write -P 0xab 1M 1M', 'write -P 0xcd 6M 64k'], ['-f', 'raw']);
    const ours = await dm(['map', '--output=json', 'sparse.raw'], dir);
    expect(ours.code, ours.stderr).toBe(0);
    expect(JSON.parse(ours.stdout)).toEqual(JSON.parse(await qemuImg('map', '--output=json', '-f', 'raw', path)));
  });
});
