/**
 * NBD exports in the page, against real servers started here: qemu-nbd on
 * files made by qemu-img and qemu-io, each behind websockify (the page
 * reaches NBD only through a WebSocket). A person connects to an export in
 * the NBD section, then mirrors from it, imports it, or mirrors into it;
 * the copies are checked against the files (sha256, qemu-img compare), and
 * the refusals say what stands in the way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { test, expect } from './fixtures.js';
import { formError, imagesMessage, jobOutcome, openApp, opfsHash, startMirror, submitMirror, waitImported, waitReadyAndComplete } from './app.js';
import { qemuImg, qemuIo } from '../helpers/qemu.js';

const PROGRAMS = ['qemu-nbd', 'qemu-img', 'qemu-io', 'websockify'];
const SIZE = 6 << 20;

interface Served {
  /** The bridge's WebSocket URL, as a person types it. */
  ws: string;
  /** The export's URI, as the page names it. */
  uri: string;
  stop(): Promise<void>;
}

let dir: string;
const children: ChildProcess[] = [];
let sourceFile: string;
let sourceHash: string;
let source: Served;
let qcow2Source: Served;

/** A TCP port nobody listens on now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Starts a program that runs until stopped; its stderr is kept for the failure message. */
function startChild(program: string, args: string[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  children.push(child);
  return { child, stderr: () => `${program} ${args.join(' ')}: ${stderr.trim()}` };
}

async function waitFor(ready: () => Promise<boolean>, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`exited (${child.exitCode}): ${stderr()}`);
    if (await ready()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`not ready in 10 s: ${stderr()}`);
}

/** Whether something accepts connections now (a Unix socket's file appears at bind, before it listens). */
const listening = (where: number | string) =>
  new Promise<boolean>((resolve) => {
    const socket = typeof where === 'number' ? connect(where, '127.0.0.1') : connect(where);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** qemu-nbd serving `file` (as raw bytes) as export `name`, behind websockify on a free port. */
async function serve(file: string, name: string, options: { readOnly: boolean }): Promise<Served> {
  const socket = join(dir, `${name}.sock`);
  const nbd = startChild('qemu-nbd', ['-t', '-e', '4', '-f', 'raw', '--cache=writeback', '-x', name, ...(options.readOnly ? ['-r'] : []), '-k', socket, file]);
  await waitFor(() => listening(socket), nbd.child, nbd.stderr);
  const port = await freePort();
  const bridge = startChild('websockify', [`--unix-target=${socket}`, `127.0.0.1:${port}`]);
  await waitFor(() => listening(port), bridge.child, bridge.stderr);
  return {
    ws: `ws://127.0.0.1:${port}`,
    uri: `nbd+ws://127.0.0.1:${port}/${name}`,
    async stop() {
      await stopChild(bridge.child);
      await stopChild(nbd.child);
    },
  };
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test.beforeAll(async () => {
  for (const program of PROGRAMS) {
    if (!existsSync(`/usr/bin/${program}`)) throw new Error(`/usr/bin/${program} is required: sudo apt-get install -y qemu-utils websockify`);
  }
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-e2e-nbd-'));
  // Data, a hole, more data, zeroes written, a tail.
  sourceFile = join(dir, 'source.raw');
  await qemuImg('create', '-f', 'raw', sourceFile, String(SIZE));
  await qemuIo(sourceFile, ['write -P 0x5a 0 1M', 'write -P 0xa5 3M 512K', 'write -z 4M 64K', 'write -P 0x11 5M 1M'], ['-f', 'raw']);
  sourceHash = sha256(sourceFile);
  source = await serve(sourceFile, 'disk', { readOnly: true });
  // The same disk as qcow2, served as its file's bytes: the page reads it as qcow2.
  const qcow2File = join(dir, 'source.qcow2');
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', sourceFile, qcow2File);
  qcow2Source = await serve(qcow2File, 'disk.qcow2', { readOnly: true });
});

test.afterAll(async () => {
  await Promise.all(children.map(stopChild));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const nbdMessage = (page: Page) => page.locator('#nbd-message');

/** Fills the NBD form and presses Connect to NBD. */
async function connectNbd(page: Page, ws: string, exportName: string, format: 'raw' | 'qcow2' = 'raw'): Promise<void> {
  await page.getByLabel('WebSocket URL').fill(ws);
  await page.getByLabel('Export name').fill(exportName);
  await page.getByLabel('Export format').selectOption(format);
  await page.getByRole('button', { name: 'Connect to NBD' }).click();
}

test('an NBD export: refusals name the problem; connected, it is mirrored into OPFS and imported, both identical to the file', async ({ page }) => {
  await openApp(page);
  // Nothing listens on a free port.
  const nobody = `ws://127.0.0.1:${await freePort()}`;
  await connectNbd(page, nobody, 'disk');
  await expect(nbdMessage(page)).toHaveText(`Nothing answered at ${nobody}/: is a WebSocket bridge (websockify) listening there?`);
  await expect(nbdMessage(page)).toHaveClass(/error/);
  await connectNbd(page, source.ws, 'nope');
  await expect(nbdMessage(page)).toHaveText(`The NBD server behind ${source.ws}/ has no export named "nope": check the export's name.`);
  await connectNbd(page, 'http://127.0.0.1:1', 'disk');
  await expect(nbdMessage(page)).toHaveText(/^http:\/\/127\.0\.0\.1:1 is not a WebSocket URL: it starts with ws:\/\/ or wss:\/\//);

  // Connected: its size, read-only; the keyboard can reach what follows.
  await connectNbd(page, source.ws, 'disk');
  await expect(nbdMessage(page)).toHaveText(`Connected to ${source.uri}: raw, 6.00 MiB, read-only. It can be the mirror's source or be imported, not a target.`);
  await expect(nbdMessage(page)).not.toHaveClass(/error/);
  const exports = page.getByRole('list', { name: 'Connected NBD exports' });
  await expect(exports.getByRole('button', { name: `Use as target: ${source.uri}` })).toBeDisabled();
  const useSource = exports.getByRole('button', { name: `Use as source: ${source.uri}` });
  await useSource.focus();
  await page.keyboard.press('Enter');
  const sourceField = page.getByRole('combobox', { name: 'Source', exact: true });
  await expect(sourceField).toBeFocused();
  await expect(sourceField.locator('option:checked')).toHaveText(`NBD export: ${source.uri}`);

  await startMirror(page, { source: `NBD export: ${source.uri}`, target: 'from-nbd.raw' });
  await expect(page.getByRole('heading', { name: `Job mirror0: ${source.uri} → from-nbd.raw` })).toBeVisible();
  await waitReadyAndComplete(page);
  await expect(jobOutcome(page)).toContainText('Done: from-nbd.raw (raw, 6.00 MiB)');
  expect(await opfsHash(page, 'from-nbd.raw')).toBe(sourceHash);
  // No checkpoint is kept for an export: nothing is listed as interrupted.
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();

  // Imported: named after the export, a mirror source at once.
  await exports.getByRole('button', { name: `Import ${source.uri}` }).click();
  await waitImported(page, 'disk');
  expect(await opfsHash(page, 'disk')).toBe(sourceHash);

  // Written to? A read-only export is refused by the server's word; the same export as source and target before anything opens.
  await submitMirror(page, { source: 'disk', target: source.uri });
  await expect(formError(page)).toHaveText(`${source.uri} is a read-only export: it can be a mirror's source or be imported, not a mirror's target.`);
  await submitMirror(page, { source: `NBD export: ${source.uri}`, target: source.uri });
  await expect(formError(page)).toHaveText(`${source.uri} is the same NBD export as the source: refusing to write to it; nothing was written.`);
});

test('a qcow2 image on an export, read as qcow2, mirrors into OPFS as raw (the disk, not the container); cut off by a reload, it is listed as interrupted (not resumable), and once discarded mirrors again', async ({ page }) => {
  await openApp(page);
  const connectQcow2 = async () => {
    await connectNbd(page, qcow2Source.ws, 'disk.qcow2', 'qcow2');
    await expect(nbdMessage(page)).toHaveText(new RegExp(`^Connected to ${qcow2Source.uri.replace(/[.+/]/g, '\\$&')}: qcow2, 6\\.00 MiB \\(the export holds [\\d.]+ (KiB|MiB)\\), read-only\\.`));
    await page.getByRole('list', { name: 'Connected NBD exports' }).getByRole('button', { name: `Use as source: ${qcow2Source.uri}` }).click();
  };
  await connectQcow2();
  // Slowly, then a reload: the copy is listed as interrupted (its target incomplete), but an export cannot be checked for changes: no resume.
  await startMirror(page, { source: `NBD export: ${qcow2Source.uri}`, target: 'from-qcow2.raw', targetFormat: 'raw', speed: '1M' });
  await expect(page.locator('#job-stats')).toContainText('Speed limit1.00 MiB/s');
  await page.waitForTimeout(2500);
  await page.reload();
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
  await expect(page.getByRole('rowheader', { name: 'from-qcow2.raw', exact: true })).toBeVisible();
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeVisible();
  const interrupted = page.locator('#interrupted');
  await expect(interrupted).toContainText('from-qcow2.raw');
  await expect(interrupted).toContainText('It cannot resume: made by a job reading an NBD export, which nothing can check for changes since: its target is incomplete; discard it and mirror again.');
  await expect(interrupted.getByRole('button', { name: /^Resume interrupted job/ })).toBeDisabled();
  await interrupted.getByRole('button', { name: /^Discard interrupted job/ }).click();
  await expect(page.getByRole('heading', { name: 'Interrupted jobs' })).toBeHidden();
  // Connected again, it mirrors into the image the first job left (an existing target of the same size).
  await connectQcow2();
  await startMirror(page, { source: `NBD export: ${qcow2Source.uri}`, target: 'from-qcow2.raw' });
  await waitReadyAndComplete(page);
  expect(await opfsHash(page, 'from-qcow2.raw')).toBe(sourceHash);
});

test('an OPFS image mirrored into a writable export of its size: the file equals the source (qemu-img compare); another size is refused', async ({ page }) => {
  const targetFile = join(dir, 'target.raw');
  await qemuImg('create', '-f', 'raw', targetFile, String(SIZE));
  const target = await serve(targetFile, 'target', { readOnly: false });
  try {
    await openApp(page);
    // The source, imported from the file.
    const chooser = page.waitForEvent('filechooser');
    await page.getByRole('button', { name: 'Import file' }).click();
    await (await chooser).setFiles(sourceFile);
    await waitImported(page, 'source.raw');
    await page.getByRole('button', { name: 'New demo image' }).click();
    await expect(page.getByRole('rowheader', { name: 'demo.raw', exact: true })).toBeVisible();

    await connectNbd(page, target.ws, 'target');
    await expect(nbdMessage(page)).toHaveText(`Connected to ${target.uri}: raw, 6.00 MiB, writable.`);
    await page.getByRole('list', { name: 'Connected NBD exports' }).getByRole('button', { name: `Use as target: ${target.uri}` }).click();
    await expect(page.getByLabel('Target', { exact: true })).toBeFocused();
    await expect(page.getByLabel('Target', { exact: true })).toHaveValue(target.uri);
    await expect(nbdMessage(page)).toHaveText(`${target.uri} is the mirror's target, read as raw: choose a source of 6.00 MiB, then press Start mirror.`);

    // The demo image is 8 MiB: an export is never resized.
    await submitMirror(page, { source: 'demo.raw', target: target.uri, targetFormat: 'raw' });
    await expect(formError(page)).toHaveText(
      `${target.uri} holds ${SIZE} bytes and the source demo.raw ${8 << 20}: an NBD export is mirrored into only when its size is the source's (it is never created or resized here).`,
    );

    await startMirror(page, { source: 'source.raw', target: target.uri, targetFormat: 'raw' });
    await waitReadyAndComplete(page);
    // The export stays on its server: nothing to download or delete here.
    await expect(jobOutcome(page)).toHaveText(`Done: ${target.uri}.`);
    await expect(jobOutcome(page).getByRole('button')).toHaveCount(0);
    await expect(imagesMessage(page)).not.toHaveClass(/error/);
    await target.stop();
    await qemuImg('compare', '-f', 'raw', '-F', 'raw', sourceFile, targetFile);
    expect(sha256(targetFile)).toBe(sourceHash);
  } finally {
    await target.stop();
  }
});
