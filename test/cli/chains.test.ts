/** Mirrors over backing chains and into qcow2, judged by qemu-img (map, compare, check). */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killAfter, run } from '../helpers/cli.js';
import { qemuCheck, qemuCompare, requireQemu } from '../helpers/qemu.js';
import { rng } from '../helpers/random.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

let dir: string;

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { cwd: dir, encoding: 'utf8' });
}

interface MapExtent {
  start: number;
  length: number;
  depth: number;
  zero: boolean;
  data: boolean;
}

/** Byte ranges a qcow2 allocates itself (depth 0), as [start, end, zero] runs. */
function topExtents(path: string): [number, number, boolean][] {
  const map = JSON.parse(sh('qemu-img', 'map', '--output=json', path)) as MapExtent[];
  return map.filter((e) => e.depth === 0).map((e) => [e.start, e.start + e.length, e.zero]);
}

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-chains-'));
  sh('qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '16M');
  sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 16M', 'base.qcow2');
  sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
  sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 2M 1M', 'mid.qcow2');
  sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
  sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x33 1M 512K', '-c', 'write -z 8M 1M', '-c', 'write -P 0x44 15M 64K', 'top.qcow2');
});
afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

describe('backing chains', () => {
  it('sync=top: only what the top image allocates is copied; the target keeps the backing file', async () => {
    const r = await run(['mirror', '--sync', 'top', join(dir, 'top.qcow2'), join(dir, 'top-copy.qcow2')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sh('qemu-img', 'info', '--output=json', 'top-copy.qcow2')).toMatch(/"backing-filename": ".*mid\.qcow2"/);
    expect(topExtents(join(dir, 'top-copy.qcow2'))).toEqual(topExtents(join(dir, 'top.qcow2')));
    expect((await qemuCompare(join(dir, 'top.qcow2'), join(dir, 'top-copy.qcow2'))).code).toBe(0);
    expect((await qemuCheck(join(dir, 'top-copy.qcow2'))).code).toBe(0);
  });

  it('sync=top with clusters smaller than the granularity: backing data stays in the backing file', async () => {
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'base.qcow2', '-F', 'qcow2', 'small.qcow2');
    // Small writes far apart: each 64 KiB chunk holds a few allocated 4 KiB clusters and much backing data.
    sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x55 70000 5000', '-c', 'write -P 0x66 300000 200000', '-c', 'write -z 1048576 8192', 'small.qcow2');
    const out = join(dir, 'small-copy.qcow2');
    const r = await run(['mirror', '--sync', 'top', '--granularity', '64K', join(dir, 'small.qcow2'), out]);
    expect(r.code, r.stderr).toBe(0);
    expect((await qemuCompare(join(dir, 'small.qcow2'), out)).code).toBe(0);
    expect((await qemuCheck(out)).code).toBe(0);
  });

  it('sync=top into a new raw target is refused: raw cannot keep the backing file', async () => {
    const r = await run(['mirror', '--sync', 'top', '-O', 'raw', join(dir, 'top.qcow2'), join(dir, 'top-copy.raw')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/needs a target that can have a backing file/);
    expect(existsSync(join(dir, 'top-copy.raw'))).toBe(false);
  });

  it('sync=full flattens the whole chain into a standalone image', async () => {
    for (const format of ['qcow2', 'raw']) {
      const out = join(dir, `flat.${format}`);
      const r = await run(['mirror', '-O', format, join(dir, 'top.qcow2'), out]);
      expect(r.code, r.stderr).toBe(0);
      expect((await qemuCompare(join(dir, 'top.qcow2'), out)).code).toBe(0);
      if (format === 'qcow2') {
        expect((await qemuCheck(out)).code).toBe(0);
        expect(sh('qemu-img', 'info', '--output=json', out)).not.toMatch(/backing-filename/);
      }
    }
  });

  it('sync=none: nothing from before the job, only writes made during it (x-source-write in QMP mode)', async () => {
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'none-src.qcow2');
    const out = join(dir, 'none-dst.qcow2');
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', out);
    const { QmpSession } = await import('../helpers/cli.js');
    const s = new QmpSession(['mirror', '--qmp', '--sync', 'none', join(dir, 'none-src.qcow2'), out]);
    await s.event('BLOCK_JOB_READY');
    await s.execute('x-source-write', { offset: 5 << 20, bytes: 100_000, pattern: 0x99 });
    await s.execute('job-complete', { id: 'mirror' });
    expect((await s.close()).code).toBe(0);
    expect((await qemuCompare(join(dir, 'none-src.qcow2'), out)).code).toBe(0);
    expect((await qemuCheck(out)).code).toBe(0);
  });
});

describe('kill and resume into qcow2', () => {
  it('SIGKILL at 20 seeded moments: each resume yields an identical target that passes qemu-img check', async () => {
    const src = join(dir, 'kill-src.qcow2');
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', src, '8M');
    sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 3M', '-c', 'write -P 0x6b 4M 3M', '-c', 'write -z 7M 512K', src);
    const next = rng(99);
    const points = Array.from({ length: 20 }, () => Math.floor(80 + next() * 1500));
    const kill = (dst: string, afterMs: number, resume: boolean, anchored = false) =>
      killAfter(['mirror', '--speed', '4M', '--checkpoint-interval', '0.1', ...(resume ? ['--resume'] : []), src, dst], afterMs, anchored ? `${dst}.dmcheckpoint` : undefined);
    let resumed = 0;
    const one = async (i: number) => {
      const dst = join(dir, `kill-${i}.qcow2`);
      // Even points count from the start (a kill may land while the process starts); odd ones from the first checkpoint, mid-copy however loaded the machine.
      await kill(dst, i % 2 === 0 ? points[i]! : points[i]! % 900, false, i % 2 === 1);
      if (i % 2 === 1 && existsSync(`${dst}.dmcheckpoint`)) await kill(dst, 100 + ((i * 53) % 500), true);
      const resume = existsSync(`${dst}.dmcheckpoint`) ? ['--resume'] : [];
      if (resume.length) resumed++;
      const r = await run(['mirror', ...resume, '--speed', '0', src, dst]);
      expect(r.code, `point ${i} (${points[i]} ms): ${r.stderr}`).toBe(0);
      expect((await qemuCompare(src, dst)).code, `point ${i}`).toBe(0);
      const check = await qemuCheck(dst);
      expect(check.code, `point ${i}: ${JSON.stringify(check)}`).toBe(0);
    };
    for (let i = 0; i < points.length; i += 2) await Promise.all([one(i), one(i + 1)]);
    // Most kills landed mid-copy, so most runs really resumed from a checkpoint.
    expect(resumed).toBeGreaterThanOrEqual(10);
  }, 300_000);
});
