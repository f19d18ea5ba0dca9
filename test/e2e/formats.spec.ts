/**
 * Images qemu-img made, brought into the page, mirrored into OPFS in both
 * formats, downloaded, and judged by qemu-img compare and check.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, expect } from './fixtures.js';
import { download, jobOutcome, jobState, makeDemo, openApp, shot, startMirror, waitImported, waitReadyAndComplete } from './app.js';
import { startFileServer, type FileServer } from '../helpers/file-server.js';
import { qemuCheck, qemuCompare, requireQemu } from '../helpers/qemu.js';

let dir: string;
let server: FileServer;

test.beforeAll(async () => {
  requireQemu();
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-e2e-formats-'));
  const q = join(dir, 'made.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', q, '12M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa5 0 3M', '-c', 'write -z 4M 2M', '-c', 'write -P 0x3c 7M 512K', '-c', 'write -c -P 0x11 9M 128K', '-c', 'discard 1M 64K', q]);
  const r = join(dir, 'made.raw');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', r, '10M']);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 512K 2M', '-c', 'write -P 0x77 8M 1M', r]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '6M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x61 0 6M', join(dir, 'base.qcow2')]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'over.qcow2')]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x62 1M 256K', '-c', 'write -z 3M 1M', join(dir, 'over.qcow2')]);
  server = await startFileServer(dir);
});
test.afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function importUrl(page: import('@playwright/test').Page, name: string): Promise<void> {
  await page.getByLabel('Image URL').fill(server.url(name));
  await page.getByRole('button', { name: 'Import from URL' }).click();
  await waitImported(page, name);
}

test('qcow2 and raw images made by qemu-img, mirrored into OPFS as raw and as qcow2, download equal to the originals', async ({ page }, testInfo) => {
  test.setTimeout(240_000);
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  await importUrl(page, 'made.qcow2');
  await importUrl(page, 'made.raw');
  await expect(page.getByRole('row', { name: /made\.qcow2/ }).getByRole('cell', { name: 'qcow2', exact: true })).toBeVisible();
  for (const source of ['made.qcow2', 'made.raw']) {
    for (const format of ['raw', 'qcow2'] as const) {
      const target = `${source.replace('.', '-')}-copy.${format}`;
      await startMirror(page, { source, target, targetFormat: format });
      await waitReadyAndComplete(page);
      const out = testInfo.outputPath(target);
      await download(page, target, out);
      const compare = await qemuCompare(join(dir, source), out);
      expect(compare.code, `${source} -> ${target}: ${compare.stdout + compare.stderr}`).toBe(0);
      if (format === 'qcow2') {
        const check = await qemuCheck(out);
        expect(check.code, `${target}: ${JSON.stringify(check)}`).toBe(0);
      }
    }
  }
  await shot(page, testInfo, 'formats');
});

test('a blank qcow2 made by Create image passes qemu-img check and reads as zeroes', async ({ page }, testInfo) => {
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  await page.getByLabel('Image name').fill('blank.qcow2');
  await page.getByLabel('Image size').fill('3G');
  await page.getByLabel('Image format').selectOption('qcow2');
  await page.getByRole('button', { name: 'Create image' }).click();
  const row = page.getByRole('row', { name: /blank\.qcow2/ });
  await expect(row.getByRole('cell', { name: '3.00 GiB' })).toBeVisible();
  const out = testInfo.outputPath('blank.qcow2');
  await download(page, 'blank.qcow2', out);
  expect((await qemuCheck(out)).code).toBe(0);
  expect(execFileSync('qemu-img', ['info', '--output=json', out], { encoding: 'utf8' })).toMatch(/"virtual-size": 3221225472/);
  await expect(jobState(page)).toContainText('No job yet');
});

test('Create image makes a blank image in each of the other formats, each passing qemu-img check (where it checks) as that format', async ({ page }, testInfo) => {
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  for (const [name, format] of [['blank.vhd', 'vpc'], ['blank.vdi', 'vdi'], ['blank.vhdx', 'vhdx'], ['blank.vmdk', 'vmdk']] as const) {
    await page.getByLabel('Image name').fill(name);
    await page.getByLabel('Image size').fill('64M');
    await page.getByLabel('Image format').selectOption(format);
    await page.getByRole('button', { name: 'Create image' }).click();
    await expect(page.getByRole('row', { name: new RegExp(name.replace('.', '\\.')) }).getByRole('cell', { name: format, exact: true })).toBeVisible();
    const out = testInfo.outputPath(name);
    await download(page, name, out);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', format, out], { encoding: 'utf8' })) as { 'virtual-size': number };
    expect(info['virtual-size']).toBeGreaterThanOrEqual(64 << 20);
    if (format !== 'vpc') expect((await qemuCheck(out, ['-f', format])).code).toBe(0);
  }
});

test('sync top over a backing chain in OPFS: the copy keeps the backing file and holds only the top', async ({ page }, testInfo) => {
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  await importUrl(page, 'base.qcow2');
  await importUrl(page, 'over.qcow2');
  await expect(page.getByRole('row', { name: /over\.qcow2/ }).getByRole('cell', { name: 'base.qcow2', exact: true })).toBeVisible();
  await startMirror(page, { source: 'over.qcow2', target: 'over-top.qcow2', targetFormat: 'qcow2', sync: 'top' });
  await waitReadyAndComplete(page);
  // Downloaded next to the original base, the copy reads like the original overlay.
  const out = join(dir, 'over-top.qcow2');
  await download(page, 'over-top.qcow2', out);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', out], { encoding: 'utf8' })) as { 'backing-filename'?: string };
  expect(info['backing-filename']).toBe('base.qcow2');
  expect((await qemuCompare(join(dir, 'over.qcow2'), out)).code).toBe(0);
  expect((await qemuCheck(out)).code).toBe(0);
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', out], { encoding: 'utf8' })) as { depth: number; length: number }[];
  const ownBytes = map.filter((e) => e.depth === 0).reduce((n, e) => n + e.length, 0);
  expect(ownBytes).toBe(256 * 1024 + 1024 * 1024);
  await shot(page, testInfo, 'sync-top');
});

test('a target named copy.vhd is made a VHD (vpc), copy.vdi a VirtualBox image, copy.vhdx a Hyper-V one and copy.vmdk a VMware one; each reads back equal to its source by qemu-img', async ({ page }, testInfo) => {
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  await makeDemo(page);
  for (const [name, format] of [['copy.vhd', 'vpc'], ['copy.vdi', 'vdi'], ['copy.vhdx', 'vhdx'], ['copy.vmdk', 'vmdk']] as const) {
    await page.getByLabel('Target', { exact: true }).fill(name);
    await expect(page.getByRole('status', { name: 'What Start mirror makes' })).toHaveText(`Start mirror makes a new ${format} image, ${name} (from its name).`);
    await page.getByRole('button', { name: 'Start mirror' }).click();
    await waitReadyAndComplete(page);
    await expect(jobOutcome(page)).toContainText(`Done: ${name} (${format}`);
    const path = testInfo.outputPath(name);
    await download(page, name, path);
    const demo = testInfo.outputPath('demo.raw');
    await download(page, 'demo.raw', demo);
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', format, demo, path], { encoding: 'utf8' })).toContain('Images are identical');
  }
});

/**
 * The formats people bring, as qemu-img makes them, imported from a file the
 * person picks: the list names the format from the content (never from the
 * name), and each converts to qcow2 in the page (a mirror onto copy.qcow2),
 * the download equal to the original by qemu-img compare.
 */
const BROUGHT: { file: string; format: string; create: string[]; converted?: boolean }[] = [
  { file: 'brought.vhd', format: 'vpc', create: ['-f', 'vpc', '-o', 'subformat=dynamic'] },
  { file: 'brought.vdi', format: 'vdi', create: ['-f', 'vdi'] },
  { file: 'brought.vhdx', format: 'vhdx', create: ['-f', 'vhdx', '-o', 'subformat=dynamic'] },
  { file: 'brought.vmdk', format: 'vmdk', create: ['-f', 'vmdk', '-o', 'subformat=monolithicSparse'] },
  // A stream takes each grain once, in order: qemu-img convert writes it (qemu-io cannot).
  { file: 'stream.vmdk', format: 'vmdk', create: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], converted: true },
];

test('images in the formats people bring, picked as files, are listed by their content and convert to qcow2 in the page, equal to the originals', async ({ page }, testInfo) => {
  test.setTimeout(240_000);
  await page.addInitScript(() => delete (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker);
  await openApp(page);
  for (const b of BROUGHT) {
    // Named .img: the list must know the format from the bytes.
    const path = join(dir, b.file.replace(/\.\w+$/, `-${b.format}.img`));
    const made = b.converted ? `${path}.raw` : path;
    execFileSync('qemu-img', ['create', '-q', ...(b.converted ? ['-f', 'raw'] : b.create), made, '9M']);
    execFileSync('qemu-io', ['-f', b.converted ? 'raw' : b.format, '-c', 'write -P 0x5b 0 1M', '-c', 'write -P 0x7c 3M 1536K', '-c', 'write -z 6M 1M', '-c', 'write -P 0x2d 8M 4K', made]);
    if (b.converted) execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', ...b.create, made, path]);
    const name = path.split('/').pop()!;
    const chooser = page.waitForEvent('filechooser');
    await page.getByRole('button', { name: 'Import file' }).click();
    await (await chooser).setFiles(path);
    await waitImported(page, name);
    await expect(page.getByRole('row', { name: new RegExp(name.replace('.', '\\.')) }).getByRole('cell', { name: b.format, exact: true })).toBeVisible();
    const target = `${name.replace(/\.img$/, '')}-copy.qcow2`;
    await startMirror(page, { source: name, target, targetFormat: 'qcow2' });
    await waitReadyAndComplete(page);
    await expect(jobOutcome(page)).toContainText(`Done: ${target} (qcow2`);
    const out = testInfo.outputPath(target);
    await download(page, target, out);
    expect(execFileSync('qemu-img', ['compare', '-f', b.format, '-F', 'qcow2', path, out], { encoding: 'utf8' })).toContain('Images are identical');
    expect((await qemuCheck(out)).code).toBe(0);
  }
});
