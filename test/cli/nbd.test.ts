/**
 * diskmirror against real NBD servers started here: qemu-nbd serving qcow2
 * images as target and as source, one export over TCP spelt several ways,
 * nbdkit's memory plugin with its error filter (the policy matrix against
 * real server errors), an export whose flushes fail, a server killed
 * mid-job and started again (with its data, and without it), and a sparse
 * 64 GiB export whose holes are found by block status, not read (a proxy
 * counts what the server sent). qemu-img is the oracle throughout: it reads
 * the exports and the files.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { QmpSession, run } from '../helpers/cli.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, requireQemu, tempDir } from '../helpers/qemu.js';
import { type NbdServer, countingProxy, nbdkitFlushFails, nbdkitMemory, qemuNbd, qemuNbdTcp, requireNbdServers } from '../helpers/nbd-servers.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

const MiB = 1 << 20;
let dir: ReturnType<typeof tempDir>;
let n = 0;
const servers: NbdServer[] = [];
const sessions: QmpSession[] = [];

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  requireNbdServers();
  dir = tempDir('diskmirror-nbd-');
});
afterEach(async () => {
  for (const s of sessions.splice(0)) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  for (const s of servers.splice(0)) await s.stop('SIGKILL');
});
afterAll(() => dir?.remove());

const file = (name: string) => dir.file(`${n++}-${name}`);
async function serve<T extends NbdServer>(server: Promise<T>): Promise<T> {
  const s = await server;
  servers.push(s);
  return s;
}
function session(args: string[]): QmpSession {
  const s = new QmpSession(args);
  sessions.push(s);
  return s;
}

/** A raw image with data everywhere (every copy is a WRITE), and a qcow2 one with data and holes. */
async function rawWithData(size: string): Promise<string> {
  const path = file('src.raw');
  await qemuImg('create', '-q', '-f', 'raw', path, size);
  await qemuIo(path, [`write -P 0x5a 0 ${size}`, 'write -P 0x11 64k 4k', `write -P 0x22 1M 512k`], ['-f', 'raw']);
  return path;
}
async function qcow2WithHoles(): Promise<string> {
  const path = file('src.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', path, '64M');
  await qemuIo(path, ['write -P 0xab 1M 3M', 'write -P 0x11 40M 64k', 'write -z 50M 1M'], ['-f', 'qcow2']);
  return path;
}

async function identical(a: string, b: string): Promise<void> {
  const r = await qemuCompare(a, b);
  expect(r.stdout + r.stderr).toContain('Images are identical');
  expect(r.code).toBe(0);
}

const errorEvents = (s: QmpSession) => s.lines.filter((l) => l.event === 'BLOCK_JOB_ERROR').map((l) => l.data as { action: string; operation: string; errno?: string; message?: string });

describe('qemu-nbd', () => {
  it('mirror --on-target-error stop into a qcow2 export: READY, complete, identical and clean by qemu-img', async () => {
    const src = await qcow2WithHoles();
    const dst = file('dst.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', dst, '64M');
    const server = await serve(qemuNbd(dst, file('dst.sock'), 'qcow2'));
    const r = await run(['mirror', '--on-target-error', 'stop', src, server.uri]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // No checkpoint is left beside anything: an export keeps none.
    expect(await qemuCompare(src, server.uri).then((x) => x.code)).toBe(0);
    await server.stop();
    await identical(src, dst);
    expect(await qemuCheck(dst)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 });
  });

  it('an export as the source: mirrored into a new qcow2 file, and info, map, compare and convert on the URI', async () => {
    const src = await qcow2WithHoles();
    const server = await serve(qemuNbd(src, file('src.sock'), 'qcow2', { readOnly: true }));
    const dst = file('dst.qcow2');
    const r = await run(['mirror', '-O', 'qcow2', server.uri, dst]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await identical(src, dst);
    expect(await qemuCheck(dst)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 });

    const info = await run(['info', '--output=json', server.uri]);
    expect(JSON.parse(info.stdout)).toMatchObject({ format: 'raw', 'virtual-size': 64 * MiB });
    // The export's holes and zeroes come from block status: map agrees with qemu-img's.
    const ours = JSON.parse((await run(['map', '--output=json', server.uri])).stdout) as { start: number; length: number; data: boolean }[];
    const theirs = JSON.parse(await qemuImg('map', '--output=json', '-f', 'raw', server.uri)) as { start: number; length: number; data: boolean }[];
    const dataRanges = (m: { start: number; length: number; data: boolean }[]) => m.filter((e) => e.data).map((e) => [e.start, e.length]);
    expect(dataRanges(ours)).toEqual(dataRanges(theirs));
    expect((await run(['compare', src, server.uri])).code).toBe(0);
    const out = file('out.raw');
    expect((await run(['convert', server.uri, out])).code).toBe(0);
    await identical(src, out);
  });

  it('convert writes into an export in place (as convert -n into a file), refusing one of another size', async () => {
    const src = await qcow2WithHoles();
    const dst = file('dst.raw');
    await qemuImg('create', '-q', '-f', 'raw', dst, '64M');
    await qemuIo(dst, ['write -P 0xee 0 64M'], ['-f', 'raw']);
    const server = await serve(qemuNbd(dst, file('dst.sock')));
    const r = await run(['convert', src, server.uri]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // What was there is gone everywhere, zero ranges included.
    await identical(src, server.uri);
    const file2 = file('same.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', file2, '64M');
    expect((await run(['convert', '-n', src, file2])).code).toBe(0);
    await identical(src, file2);
    const small = await serve(nbdkitMemory('1M', file('small.sock')));
    const refused = await run(['convert', src, small.uri]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/is 1048576 bytes and .* is 67108864: -n needs a target of the source's size/);
  });

  it('refuses an export that is both source and target, however the URI spells it, and --resume with an export', async () => {
    const img = file('one.raw');
    await qemuImg('create', '-q', '-f', 'raw', img, '4M');
    const server = await serve(qemuNbd(img, file('one.sock')));
    const other = `nbd+unix:///?socket=${server.socket.replace(/^\//, '/./')}`;
    const same = await run(['mirror', server.uri, other]);
    expect(same.code).not.toBe(0);
    expect(same.stderr).toMatch(/is the same file as the source/);
    const resume = await run(['mirror', '--resume', img + 'x', server.uri]);
    expect(resume.code).toBe(2);
    expect(resume.stderr).toMatch(/--resume needs a checkpoint, and none is kept when an image is an NBD export/);
    const bad = await run(['info', 'nbd+unix:///?sock=x']);
    expect(bad.stderr).toMatch(/not an NBD URI: no socket=PATH/);
    const gone = await run(['info', `nbd+unix:///?socket=${dir.file('nothing.sock')}`]);
    expect(gone.stderr).toMatch(/cannot connect/);
  });
});

describe('convert into an export whose flushes fail', () => {
  it('convert -n under unsafe (the default) flushes nothing and exits 0 with the copy whole, as qemu-img does; under -t writeback the failed flush fails it, named', async () => {
    const src = await rawWithData('4M');
    const dst = file('dst.raw');
    await qemuImg('create', '-q', '-f', 'raw', dst, '4M');
    const server = await serve(nbdkitFlushFails(dst, 4 * MiB, file('flush.sock')));
    // The oracle: qemu-img convert -n exits 0 here.
    await qemuImg('convert', '-n', '-f', 'raw', '-O', 'raw', src, server.uri);
    await qemuImg('create', '-q', '-f', 'raw', dst, '4M');

    const r = await run(['convert', '-n', src, server.uri]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await identical(src, dst);

    const w = await run(['convert', '-n', '-t', 'writeback', src, server.uri]);
    expect(w.code).toBe(1);
    expect(w.stderr).toMatch(/^diskmirror convert: flushing the target failed: flush of 0 bytes at offset 0: EIO \(.*NBD_CMD_FLUSH with NBD_EIO\)\n$/);
  });
});

describe('one export over TCP, its host spelt several ways', () => {
  it('localhost, 127.0.0.1 and 127.1 name one export: refused as its own target, whichever spelling is the source', async () => {
    const img = file('tcp.raw');
    await qemuImg('create', '-q', '-f', 'raw', img, '4M');
    await qemuIo(img, ['write -P 0x42 0 4M'], ['-f', 'raw']);
    const server = await serve(qemuNbdTcp(img, 'x'));
    const spelt = (host: string) => `nbd://${host}:${server.port}/x`;
    for (const [source, target] of [
      ['localhost', '127.0.0.1'],
      ['127.0.0.1', '127.1'],
      ['127.1', 'localhost'],
    ] as const) {
      const mirror = await run(['mirror', spelt(source), spelt(target)]);
      expect(mirror.stderr).toContain(`${spelt(target)} is the same file as the source ${spelt(source)}: refusing to write to it; nothing was written`);
      expect(mirror.code).toBe(1);
      const convert = await run(['convert', spelt(source), spelt(target)]);
      expect(convert.stderr).toContain(`${spelt(target)} is the same file as the source ${spelt(source)}`);
      expect(convert.code).toBe(1);
    }
    // Another export of the same server is another image.
    const other = file('other.raw');
    await qemuImg('create', '-q', '-f', 'raw', other, '4M');
    const second = await serve(qemuNbdTcp(other, 'x'));
    const r = await run(['convert', spelt('localhost'), `nbd://127.1:${second.port}/x`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await server.stop();
    await identical(img, other);
  });
});

describe('nbdkit memory with its error filter: the policy matrix against real server errors', () => {
  /** A target export of the source's size, failing writes as `filter` says. */
  async function target(size: string, filter: string[]): Promise<NbdServer> {
    return serve(nbdkitMemory(size, file('mem.sock'), ['--filter=error', ...filter]));
  }

  for (const [policy, errno] of [
    ['report', 'EIO'],
    ['enospc', 'EIO'],
    ['auto', 'EIO'],
    ['report', 'ENOSPC'],
  ] as const) {
    it(`target, ${policy}, ${errno} on every write: the job fails with ${errno}`, async () => {
      const src = await rawWithData('4M');
      const server = await target('4M', [`error-pwrite=${errno}`, 'error-pwrite-rate=100%']);
      const r = await run(['mirror', '--on-target-error', policy, src, server.uri]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`write error (${errno})`);
      expect(r.stderr).toMatch(new RegExp(`the job failed: .*${errno === 'EIO' ? 'Input/output error|NBD_EIO' : 'No space left|NBD_ENOSPC'}`));
    });
  }

  it('target, ignore, EIO on every write for a while: reported, retried, and once the fault is gone the copy is whole, identical', async () => {
    const src = await rawWithData('8M');
    const armed = file('armed');
    writeFileSync(armed, '');
    const server = await target('8M', ['error-pwrite=EIO', 'error-pwrite-rate=100%', `error-pwrite-file=${armed}`]);
    const s = session(['mirror', '--qmp', '--id', 'm', '--on-target-error', 'ignore', src, server.uri]);
    await s.waitFor(() => errorEvents(s).length >= 3);
    expect(errorEvents(s).every((e) => e.action === 'ignore' && e.operation === 'write')).toBe(true);
    // Ignored, never paused; the failed ranges stay dirty until the server takes them.
    expect(s.events()).not.toContain('paused');
    rmSync(armed);
    await s.event('BLOCK_JOB_READY');
    await s.execute('job-complete', { id: 'm' });
    const done = await s.event('BLOCK_JOB_COMPLETED');
    expect(done.data).not.toHaveProperty('error');
    expect((await s.close()).code).toBe(0);
    await identical(src, server.uri);
  });

  for (const [policy, errno] of [
    ['stop', 'EIO'],
    ['stop', 'ENOSPC'],
    ['enospc', 'ENOSPC'],
    ['auto', 'ENOSPC'],
  ] as const) {
    it(`target, ${policy}, ${errno} while a file exists: pauses; the fault gone, resume completes identical`, async () => {
      const src = await rawWithData('4M');
      const armed = file('armed');
      writeFileSync(armed, '');
      const server = await target('4M', [`error-pwrite=${errno}`, 'error-pwrite-rate=100%', `error-pwrite-file=${armed}`]);
      const s = session(['mirror', '--qmp', '--id', 'm', '--on-target-error', policy, src, server.uri]);
      await s.status('paused');
      expect(errorEvents(s)[0]).toMatchObject({ action: 'stop', operation: 'write' });
      expect((await s.execute('query-block-jobs')).return).toMatchObject([{ 'io-status': errno === 'ENOSPC' ? 'nospace' : 'failed', paused: true }]);
      rmSync(armed);
      expect(await s.execute('job-resume', { id: 'm' })).toMatchObject({ return: {} });
      await s.event('BLOCK_JOB_READY');
      expect(await s.execute('job-complete', { id: 'm' })).toMatchObject({ return: {} });
      const done = await s.event('BLOCK_JOB_COMPLETED');
      expect(done.data).not.toHaveProperty('error');
      expect((await s.close()).code).toBe(0);
      await identical(src, server.uri);
    });
  }

  it('source, report and stop on read errors of a memory export', async () => {
    const size = '4M';
    const armed = file('armed');
    writeFileSync(armed, '');
    const server = await serve(nbdkitMemory(size, file('src.sock'), ['--filter=error', 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${armed}`]));
    rmSync(armed);
    await qemuIo(server.uri, ['write -P 0x33 0 4M', 'write -P 0x44 1M 64k'], ['-f', 'raw']);
    writeFileSync(armed, '');

    const failed = await run(['mirror', '--on-source-error', 'report', server.uri, file('a.raw')]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('read error (EIO)');

    const dst = file('b.raw');
    const s = session(['mirror', '--qmp', '--id', 'm', '--on-source-error', 'stop', server.uri, dst]);
    await s.status('paused');
    expect(errorEvents(s)[0]).toMatchObject({ action: 'stop', operation: 'read' });
    rmSync(armed);
    await s.execute('job-resume', { id: 'm' });
    await s.event('BLOCK_JOB_READY');
    await s.execute('job-complete', { id: 'm' });
    expect((await s.close()).code).toBe(0);
    await identical(server.uri, dst);
  });
});

/** Waits until the job's offset reaches `bytes`. */
async function copied(s: QmpSession, bytes: number): Promise<void> {
  for (;;) {
    const jobs = (await s.execute('query-block-jobs')).return as { offset: number }[];
    if (jobs[0]!.offset >= bytes) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a server killed mid-job', () => {
  it('EIO meets the stop policy; the server started again, resume completes on a new connection, identical', async () => {
    const src = await rawWithData('32M');
    const dst = file('dst.raw');
    await qemuImg('create', '-q', '-f', 'raw', dst, '32M');
    const socket = file('kill.sock');
    let server = await serve(qemuNbd(dst, socket));
    const s = session(['mirror', '--qmp', '--id', 'm', '--speed', '8M', '--on-target-error', 'stop', src, server.uri]);
    await s.status('running');
    // Some of it copied, then the server is gone.
    await copied(s, 4 * MiB);
    await server.stop('SIGKILL');
    await s.status('paused');
    const error = errorEvents(s)[0]!;
    expect(error).toMatchObject({ action: 'stop', operation: 'write' });
    server = await serve(qemuNbd(dst, socket));
    await s.execute('block-job-set-speed', { device: 'm', speed: 0 });
    expect(await s.execute('job-resume', { id: 'm' })).toMatchObject({ return: {} });
    await s.event('BLOCK_JOB_READY');
    await s.execute('job-complete', { id: 'm' });
    expect((await s.close()).code).toBe(0);
    await server.stop();
    await identical(src, dst);
  }, 60_000);
});

describe('a target that restarts without its data', () => {
  for (const policy of ['stop', 'ignore'] as const) {
    it(`${policy}: nbdkit's memory export killed mid-copy and started again empty: a write error says the connection was lost, what was written before is copied again, identical`, async () => {
      const src = await rawWithData('32M');
      const socket = file('forgets.sock');
      let server = await serve(nbdkitMemory('32M', socket));
      const s = session(['mirror', '--qmp', '--id', 'm', '--speed', '8M', '--on-target-error', policy, src, server.uri]);
      await s.status('running');
      await copied(s, 4 * MiB);
      await server.stop('SIGKILL');
      if (policy === 'stop') await s.status('paused');
      server = await serve(nbdkitMemory('32M', socket));
      await s.execute('block-job-set-speed', { device: 'm', speed: 0 });
      if (policy === 'stop') expect(await s.execute('job-resume', { id: 'm' })).toMatchObject({ return: {} });
      await s.event('BLOCK_JOB_READY');
      const lost = errorEvents(s).filter((e) => /the connection was lost.*what the server acknowledged since the last flush may be gone: the \d+ chunks written there since then are dirty again/.test(e.message ?? ''));
      expect(lost).toEqual([expect.objectContaining({ operation: 'write', action: policy, errno: 'EIO' })]);
      await s.execute('job-complete', { id: 'm' });
      const done = await s.event('BLOCK_JOB_COMPLETED');
      expect(done.data).not.toHaveProperty('error');
      expect((await s.close()).code).toBe(0);
      await identical(src, server.uri);
    }, 60_000);
  }
});

describe('a sparse 64 GiB export', () => {
  it('holes are found by block status, not read: the server sends little more than the data', async () => {
    const server = await serve(nbdkitMemory('64G', file('big.sock')));
    await qemuIo(server.uri, ['write -P 0x61 0 1M', 'write -P 0x62 40G 1M', 'write -P 0x63 65535M 1M'], ['-f', 'raw']);
    const proxy = await countingProxy(server.socket, file('proxy.sock'));
    try {
      const out = file('big.raw');
      const r = await run(['convert', proxy.uri, out]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const sent = proxy.fromServer();
      // 3 MiB of data; the handshake, replies and block status extents are a few KiB more.
      expect(sent).toBeGreaterThanOrEqual(3 * MiB);
      expect(sent).toBeLessThan(3 * MiB + 256 * 1024);
      await identical(server.uri, out);
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
