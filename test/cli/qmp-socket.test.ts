/**
 * `diskmirror mirror --qmp unix:PATH` driven by a QMP client written for
 * QEMU (the npm package qemu-qmp: it waits for the greeting, negotiates,
 * and writes commands with no newline between them). The same client
 * drives real QEMU (`-qmp unix:PATH,server=on,wait=off`) through the same
 * steps, so the test also proves the client works.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync } from 'node:fs';
import QMP from 'qemu-qmp';
import { assertBuilt, BIN } from '../helpers/cli.js';
import { qemuCompare, qemuImg, qemuIo, requireQemu, tempDir } from '../helpers/qemu.js';
import { requireQemuSystem } from '../helpers/qemu-mirror.js';

let dir: ReturnType<typeof tempDir>;

beforeAll(() => {
  assertBuilt();
  requireQemu();
  requireQemuSystem();
  dir = tempDir('diskmirror-qmp-socket-');
});
afterAll(() => dir?.remove());

async function images(tag: string): Promise<{ src: string; dst: string }> {
  const src = dir.file(`${tag}-src.raw`);
  const dst = dir.file(`${tag}-dst.raw`);
  await qemuImg('create', '-q', '-f', 'raw', src, '4M');
  await qemuIo(src, ['write -P 0x6d 0 3M'], ['-f', 'raw']);
  await qemuImg('create', '-q', '-f', 'raw', dst, '4M');
  return { src, dst };
}

async function socketAppears(path: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (lstatSync(path, { throwIfNoEntry: false })?.isSocket()) return;
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}) before listening`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${path} did not appear`);
}

/** The client's calls as promises. */
function client(path: string): Promise<QMP> {
  return new Promise((resolve, reject) => {
    const qmp = new QMP();
    qmp.connect(path, (err) => (err ? reject(err) : resolve(qmp)));
  });
}

const exec = (qmp: QMP, command: string, args?: Record<string, unknown>) =>
  new Promise<unknown>((resolve, reject) => qmp.execute(command, args ?? null, (err, value) => (err ? reject(err) : resolve(value))));

const seen = (qmp: QMP, event: string) => new Promise<void>((resolve) => qmp.once(event, () => resolve()));

/** What the client saw of one job, from READY to quit. */
async function drive(qmp: QMP, start: () => Promise<void>): Promise<Record<string, unknown>> {
  const ready = seen(qmp, 'block_job_ready');
  const completed = seen(qmp, 'block_job_completed');
  await start();
  await ready;
  const during = (await exec(qmp, 'query-block-jobs')) as Record<string, unknown>[];
  await exec(qmp, 'job-complete', { id: 'mirror' });
  await completed;
  // The job goes away a moment after COMPLETED.
  let after: unknown[] = [];
  for (let i = 0; i < 50; i++) {
    after = (await exec(qmp, 'query-block-jobs')) as unknown[];
    if (after.length === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const notFound = await exec(qmp, 'job-cancel', { id: 'mirror' }).then(
    () => 'accepted',
    (err: Error) => err.message,
  );
  // qemu-qmp copies the greeting's members onto the client.
  const greeting = { version: qmp.version, capabilities: qmp.capabilities };
  await exec(qmp, 'quit');
  return { greeting, during: during.map((j) => ({ device: j.device, status: j.status, ready: j.ready })), after, notFound };
}

const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.on('close', resolve)));

describe('a QMP client written for QEMU drives diskmirror as it drives QEMU', () => {
  it('greeting, negotiation, READY, job-complete, COMPLETED, query-block-jobs, quit: the same from both', async () => {
    // QEMU.
    const q = await images('qemu');
    const qemuSocket = dir.file('qemu.sock');
    const qemu = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${qemuSocket},server=on,wait=off`], { stdio: 'ignore' });
    await socketAppears(qemuSocket, qemu);
    const qc = await client(qemuSocket);
    const fromQemu = await drive(qc, async () => {
      await exec(qc, 'blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: q.src } });
      await exec(qc, 'blockdev-add', { driver: 'raw', 'node-name': 'tgt', file: { driver: 'file', filename: q.dst } });
      await exec(qc, 'blockdev-mirror', { 'job-id': 'mirror', device: 'src', target: 'tgt', sync: 'full' });
    });
    expect(await exited(qemu)).toBe(0);
    expect((await qemuCompare(q.src, q.dst)).code).toBe(0);

    // diskmirror.
    const d = await images('dm');
    const ourSocket = dir.file('dm.sock');
    const ours = spawn(process.execPath, [BIN, 'mirror', '--qmp', `unix:${ourSocket}`, d.src, d.dst], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    ours.stderr!.on('data', (c) => (stderr += c));
    await socketAppears(ourSocket, ours);
    const dc = await client(ourSocket);
    const fromUs = await drive(dc, async () => {});
    expect(await exited(ours), stderr).toBe(0);
    expect((await qemuCompare(d.src, d.dst)).code).toBe(0);
    expect(existsSync(ourSocket)).toBe(false);

    expect(fromQemu.greeting).toMatchObject({ version: { qemu: { major: 7 } }, capabilities: expect.any(Array) });
    expect(fromUs.greeting).toMatchObject({ version: { qemu: { major: 0, minor: 1 }, package: expect.stringMatching(/^diskmirror /) }, capabilities: [] });
    const { greeting: _q, ...qemuRest } = fromQemu;
    const { greeting: _d, ...ourRest } = fromUs;
    expect(ourRest).toEqual(qemuRest);
    expect(qemuRest).toEqual({ during: [{ device: 'mirror', status: 'ready', ready: true }], after: [], notFound: 'Job not found' });
  });

  it('a client may leave and another come: the job goes on; the monitor ends after quit', async () => {
    const d = await images('again');
    const socket = dir.file('again.sock');
    const ours = spawn(process.execPath, [BIN, 'mirror', '--qmp', `unix:${socket}`, '--speed', '2M', '--buf-size', '512K', d.src, d.dst], { stdio: 'ignore' });
    await socketAppears(socket, ours);
    const first = await client(socket);
    await seen(first, 'job_status_change');
    first.end();
    await new Promise((r) => setTimeout(r, 200));
    expect(ours.exitCode).toBeNull();
    const second = await client(socket);
    // Listening before asking: READY may come while the query or the speed change is answered.
    const readyEvent = seen(second, 'block_job_ready');
    const jobs = (await exec(second, 'query-block-jobs')) as Record<string, unknown>[];
    expect(jobs).toMatchObject([{ device: 'mirror' }]);
    await exec(second, 'block-job-set-speed', { device: 'mirror', speed: 0 });
    if (!jobs[0]!.ready) await readyEvent;
    await exec(second, 'job-complete', { id: 'mirror' });
    await seen(second, 'block_job_completed');
    await exec(second, 'quit');
    expect(await exited(ours)).toBe(0);
    expect((await qemuCompare(d.src, d.dst)).code).toBe(0);
  });

  it('refuses to replace a file that is not a socket', async () => {
    const d = await images('refuse');
    const r = spawn(process.execPath, [BIN, 'mirror', '--qmp', `unix:${d.src}`, d.src, d.dst], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    r.stderr!.on('data', (c) => (stderr += c));
    expect(await exited(r)).not.toBe(0);
    expect(stderr).toMatch(/exists and is not a socket; refusing to replace it/);
  });
});
