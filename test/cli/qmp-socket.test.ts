/**
 * `diskmirror mirror --qmp unix:PATH` driven by a QMP client written for
 * QEMU (the npm package qemu-qmp: it waits for the greeting, negotiates,
 * and writes commands with no newline between them). The same client
 * drives real QEMU (`-qmp unix:PATH,server=on,wait=off`) through the same
 * steps, so the test also proves the client works.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import QMP from 'qemu-qmp';
import { BIN } from '../helpers/cli.js';
import { qemuCompare, qemuImg, qemuIo, requireQemu, tempDir } from '../helpers/qemu.js';
import { requireQemuSystem } from '../helpers/qemu-mirror.js';
import { expectFloodBounded, RawQmp } from '../helpers/qmp-raw.js';
import { requireBuiltCommand } from '../helpers/require-program.js';

let dir: ReturnType<typeof tempDir>;

beforeAll(() => {
  requireBuiltCommand();
  requireQemu();
  requireQemuSystem();
  dir = tempDir('diskmirror-qmp-socket-');
});
/** Servers this file started: any still running when it ends (a test failed midway) are killed. */
const servers = new Set<ChildProcess>();
afterAll(() => {
  for (const child of servers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  dir?.remove();
});

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

const QEMU_QMP_ONLY = ['-machine', 'none', '-nodefaults', '-display', 'none'];

/** QEMU with nothing but a QMP socket, once it listens. */
async function startQemu(socket: string): Promise<ChildProcess> {
  const qemu = spawn('qemu-system-x86_64', [...QEMU_QMP_ONLY, '-qmp', `unix:${socket},server=on,wait=off`], { stdio: 'ignore' });
  servers.add(qemu);
  await socketAppears(socket, qemu);
  return qemu;
}

/** `diskmirror mirror --qmp unix:SOCKET ARGS...`, once it listens; what it says on stderr is kept. */
async function startOurs(socket: string, args: string[]): Promise<{ child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, 'mirror', '--qmp', `unix:${socket}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  servers.add(child);
  await socketAppears(socket, child);
  return { child, stderr: () => stderr };
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
    const qemu = await startQemu(qemuSocket);
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
    const ours = await startOurs(ourSocket, [d.src, d.dst]);
    const dc = await client(ourSocket);
    const fromUs = await drive(dc, async () => {});
    expect(await exited(ours.child), ours.stderr()).toBe(0);
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
    // Listening before asking: COMPLETED may come in the same read as job-complete's answer.
    const completed = seen(second, 'block_job_completed');
    await exec(second, 'job-complete', { id: 'mirror' });
    await completed;
    await exec(second, 'quit');
    expect(await exited(ours)).toBe(0);
    expect((await qemuCompare(d.src, d.dst)).code).toBe(0);
  });

  it('refuses to replace a file that is not a socket', async () => {
    const d = await images('refuse');
    const r = await runGuarded(process.execPath, [BIN, 'mirror', '--qmp', `unix:${d.src}`, d.src, d.dst]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/exists and is not a socket; refusing to replace it/);
  });
});

/** A raw client on the socket, once connected. */
function rawClient(path: string): Promise<RawQmp> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('error', reject);
    socket.once('connect', () => resolve(new RawQmp(socket, socket)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Two clients, one after the other, as a client library that keeps its
 * first connection half-open meets the server: what each hears, in words
 * that do not depend on the server's jobs.
 */
async function turns(path: string): Promise<{ transcript: string[]; second: RawQmp }> {
  const transcript: string[] = [];
  const first = await rawClient(path);
  await first.heard('"QMP"');
  await first.ask('qmp_capabilities', 'first-negotiates');
  const second = await rawClient(path);
  // A round trip on the first after the second connected, and a moment more: the server has seen the second.
  await first.ask('query-jobs', 'first-asks');
  await sleep(300);
  transcript.push(`second, while the first is served: heard ${JSON.stringify(second.heardSoFar)}, ${second.ended || second.closed ? 'closed' : 'still connected'}`);
  // The first ends its write side with a command in flight, and goes on reading.
  const lastAnswer = first.heard('"id":"first-last"');
  first.send({ execute: 'query-jobs', id: 'first-last' });
  (first.input as Socket).end();
  await lastAnswer;
  transcript.push('first: its last command answered');
  await first.hungUp;
  transcript.push(`first: ${first.ended ? 'closed by the server' : 'gone'}`);
  await second.heard('"QMP"');
  transcript.push('second: greeted');
  await second.ask('qmp_capabilities', 'second-negotiates');
  transcript.push('second: negotiated');
  return { transcript, second };
}

describe("clients wait their turn, as in QEMU's listen backlog", () => {
  it('a second client hears nothing and stays connected while the first is served; the first half-closes, is answered and closed, and the second is greeted and completes the job: QEMU and diskmirror alike', async () => {
    const qemuSocket = dir.file('turns-qemu.sock');
    const qemu = await startQemu(qemuSocket);
    const fromQemu = await turns(qemuSocket);
    await fromQemu.second.ask('quit', 'second-quits');
    expect(await exited(qemu)).toBe(0);

    const d = await images('turns');
    const ourSocket = dir.file('turns-dm.sock');
    const ours = await startOurs(ourSocket, [d.src, d.dst]);
    const fromUs = await turns(ourSocket);
    expect(fromUs.transcript).toEqual(fromQemu.transcript);
    expect(fromQemu.transcript).toEqual([
      'second, while the first is served: heard "", still connected',
      'first: its last command answered',
      'first: closed by the server',
      'second: greeted',
      'second: negotiated',
    ]);
    // The second client completes the job the first started.
    const second = fromUs.second;
    const [job] = (await second.ask('query-block-jobs', 'second-queries')).return as Record<string, unknown>[];
    if (!job!.ready) await second.heard('BLOCK_JOB_READY');
    await second.ask('job-complete', 'second-completes', { id: 'mirror' });
    await second.heard('BLOCK_JOB_COMPLETED');
    await second.ask('quit', 'second-quits');
    expect(await exited(ours.child), ours.stderr()).toBe(0);
    expect((await qemuCompare(d.src, d.dst)).code).toBe(0);
    expect(existsSync(ourSocket)).toBe(false);
  });

  it('a client that floods commands and reads nothing: the monitor stops reading it, its memory stays bounded, and every answer comes once it reads', async () => {
    const d = await images('flood');
    const socket = dir.file('flood.sock');
    const ours = await startOurs(socket, ['--sync', 'none', d.src, d.dst]);
    const peer = await rawClient(socket);
    await peer.heard('"QMP"');
    await peer.ask('qmp_capabilities', 'negotiate');
    await peer.heard('BLOCK_JOB_READY');
    await expectFloodBounded(peer, ours.child.pid!);
    await peer.ask('job-complete', 'complete', { id: 'mirror' });
    await peer.ask('quit', 'quit');
    expect(await exited(ours.child), ours.stderr()).toBe(0);
  }, 180_000);
});

/** Runs to its exit, or is killed after `guardMs` (a server that listens for ever): resolves with the code (null if killed) and stderr. */
function runGuarded(program: string, args: string[], guardMs = 20_000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c) => (stderr += c));
    const guard = setTimeout(() => child.kill('SIGKILL'), guardMs);
    child.on('close', (code) => {
      clearTimeout(guard);
      resolve({ code, stderr });
    });
  });
}

describe('socket paths refused before any image is touched, as QEMU refuses them', () => {
  const qemuListen = (path: string) => runGuarded('qemu-system-x86_64', [...QEMU_QMP_ONLY, '-qmp', `unix:${path},server=on,wait=off`], 5_000);

  it('a path longer than a socket address holds (over 108 bytes): refused with QEMU\'s words, exit 2, no target made; 108 bytes is bound whole', async () => {
    const d = await images('long');
    const base = mkdtempSync(`${dir.path}/l`);
    const long = `${base}/${'s'.repeat(109 - base.length - 1)}`;
    expect(Buffer.byteLength(long)).toBe(109);
    const qemu = await qemuListen(long);
    expect(qemu.code).toBe(1);
    expect(qemu.stderr).toContain(`UNIX socket path '${long}' is too long`);
    const dst = dir.file('long-new.raw');
    const r = await runGuarded(process.execPath, [BIN, 'mirror', '--qmp', `unix:${long}`, d.src, dst]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toBe(`diskmirror mirror: --qmp: UNIX socket path '${long}' is too long (109 bytes; at most 108)\n`);
    expect(existsSync(dst)).toBe(false);

    // 108 bytes: the whole name, a client reaches it, and it is gone afterwards.
    const fits = long.slice(0, -1);
    const ours = await startOurs(fits, ['--sync', 'none', d.src, dst]);
    const peer = await rawClient(fits);
    await peer.heard('"QMP"');
    await peer.ask('qmp_capabilities', 'negotiate');
    await peer.ask('job-cancel', 'cancel', { id: 'mirror' });
    await peer.ask('quit', 'quit');
    expect(await exited(ours.child), ours.stderr()).toBe(1);
    expect(existsSync(fits)).toBe(false);
  });

  it('a directory that does not exist, or is a file: "Failed to bind socket" with the real cause, as QEMU names it, exit 2, no target made', async () => {
    const d = await images('nodir');
    const notDir = dir.file('plain-file');
    writeFileSync(notDir, '');
    for (const [path, cause] of [
      [dir.file('no-such-dir/qmp.sock'), 'No such file or directory'],
      [`${notDir}/qmp.sock`, 'Not a directory'],
    ] as const) {
      const qemu = await qemuListen(path);
      expect(qemu.code).toBe(1);
      // QEMU says which of its steps failed (bind, or the unlink before it); the cause is the same.
      expect(qemu.stderr).toMatch(new RegExp(`Failed to (bind socket to|unlink socket) ${path}: ${cause}`));
      const dst = dir.file('nodir-new.raw');
      const r = await runGuarded(process.execPath, [BIN, 'mirror', '--qmp', `unix:${path}`, d.src, dst]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toBe(`diskmirror mirror: --qmp: Failed to bind socket to ${path}: ${cause}\n`);
      expect(existsSync(dst)).toBe(false);
      expect(existsSync(`${dst}.dmcheckpoint`)).toBe(false);
    }
  });
});
