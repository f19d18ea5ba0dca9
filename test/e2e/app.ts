/** Steps a person takes in the app, by the names they see. */
import type { Locator, Page, TestInfo } from '@playwright/test';
import { expect } from './fixtures.js';

export async function openApp(page: Page): Promise<void> {
  page.on('dialog', (d) => void d.accept()); // confirm() before a delete
  await page.goto('/');
  await expect(page.locator('body[data-ready="true"]')).toBeAttached();
}

/** Creates a blank image with the Create image form. */
export async function createBlank(page: Page, name: string, size: string, format: 'raw' | 'qcow2'): Promise<void> {
  await page.getByLabel('Image name').fill(name);
  await page.getByLabel('Image size').fill(size);
  await page.getByLabel('Image format').selectOption(format);
  await page.getByRole('button', { name: 'Create image' }).click();
  await expect(page.getByRole('rowheader', { name, exact: true })).toBeVisible();
}

export async function makeDemo(page: Page): Promise<void> {
  await page.getByRole('button', { name: 'New demo image' }).click();
  await expect(page.getByRole('rowheader', { name: 'demo.raw', exact: true })).toBeVisible();
}

export interface MirrorForm {
  source: string;
  target: string;
  targetFormat?: 'raw' | 'qcow2';
  speed?: string;
  onSourceError?: string;
  onTargetError?: string;
  copyMode?: string;
  sync?: string;
}

/** Fills the mirror form and presses Start mirror (the job may be refused: see formError). */
export async function submitMirror(page: Page, f: MirrorForm): Promise<void> {
  await page.getByRole('combobox', { name: 'Source', exact: true }).selectOption({ label: f.source });
  await page.getByLabel('Target', { exact: true }).fill(f.target);
  await page.getByLabel('Target format').selectOption(f.targetFormat ?? '');
  if (f.sync) await page.getByLabel('Sync').selectOption(f.sync);
  await page.getByLabel('Speed limit').fill(f.speed ?? '');
  await page.getByLabel('On source error').selectOption(f.onSourceError ?? 'report');
  await page.getByLabel('On target error').selectOption(f.onTargetError ?? 'report');
  await page.getByLabel('Copy mode').selectOption(f.copyMode ?? 'background');
  await page.getByRole('button', { name: 'Start mirror' }).click();
}

export async function startMirror(page: Page, f: MirrorForm): Promise<void> {
  await submitMirror(page, f);
  await expect(page.getByRole('status', { name: 'Job state' })).toContainText(/running|ready/);
}

/** The mirror form's error line (a refused start). */
export const formError = (page: Page) => page.locator('#form-error');

/** The error line of the interrupted jobs (a refused resume). */
export const interruptedError = (page: Page) => page.locator('#interrupted-error');

/** The line under the images toolbar (deletes, downloads, imports). */
export const imagesMessage = (page: Page) => page.locator('#images-message');

/** Names of the files in the app's OPFS directory, temporary ones included. */
export async function opfsNames(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('images', { create: true });
    const names: string[] = [];
    for await (const [name] of dir as unknown as AsyncIterable<[string, unknown]>) names.push(name);
    return names.sort();
  });
}

/** Writes `bytes` at `offset` into an image in OPFS from the page, as another program would (no lock). */
export async function scribble(page: Page, name: string, offset: number, bytes: number[]): Promise<void> {
  await page.evaluate(
    async ({ name, offset, bytes }) => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('images');
      const handle = await dir.getFileHandle(name);
      const writable = await (handle as unknown as { createWritable(o: { keepExistingData: boolean }): Promise<FileSystemWritableFileStream> }).createWritable({ keepExistingData: true });
      await writable.write({ type: 'write', position: offset, data: new Uint8Array(bytes) });
      await writable.close();
    },
    { name, offset, bytes },
  );
}

export const jobState = (page: Page) => page.getByRole('status', { name: 'Job state' });

/** How the job shown ended: its sentence and actions. */
export const jobOutcome = (page: Page) => page.getByRole('status', { name: 'How the job ended' });

export async function waitReadyAndComplete(page: Page): Promise<void> {
  await expect(jobState(page)).toContainText('— ready', { timeout: 60_000 });
  await page.getByRole('button', { name: 'Complete', exact: true }).click();
  await expect(jobState(page)).toContainText('— completed, the target equals the source', { timeout: 60_000 });
}

/** An import completed by itself: its image is in the list, free to mirror. */
export async function waitImported(page: Page, name: string): Promise<void> {
  await expect(imagesMessage(page)).toHaveText(`Imported ${name}: it is ready to mirror.`, { timeout: 60_000 });
  await expect(page.getByRole('rowheader', { name, exact: true })).toBeVisible();
}

export async function addFault(page: Page, f: { side: string; op: string; errno: string; offset: string; length: string; once: boolean }): Promise<void> {
  await page.getByLabel('Fault side').selectOption(f.side);
  await page.getByLabel('Fault operation').selectOption(f.op);
  await page.getByLabel('Fault error').selectOption(f.errno);
  await page.getByLabel('Fault offset').fill(f.offset);
  await page.getByLabel('Fault length').fill(f.length);
  await page.getByLabel('Once').setChecked(f.once);
  await page.getByRole('button', { name: 'Add fault' }).click();
  await expect(page.getByRole('list', { name: 'Fault rules' }).getByRole('listitem').first()).toBeVisible();
}

/** SHA-256 of an image file in OPFS, computed in the page. */
export async function opfsHash(page: Page, name: string): Promise<string> {
  return page.evaluate(async (n) => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('images');
    const file = await (await dir.getFileHandle(n)).getFile();
    const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
    return [...new Uint8Array(digest)].map((x) => x.toString(16).padStart(2, '0')).join('');
  }, name);
}

/** The events in the log, parsed. */
export async function loggedEvents(page: Page): Promise<{ event: string; data: Record<string, unknown> }[]> {
  const toggle = page.getByRole('button', { name: 'Show as JSON lines' });
  if (await toggle.isVisible()) await toggle.click();
  const text = (await page.getByLabel('Events as JSON lines').textContent()) ?? '';
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown> });
}

export async function shot(page: Page, testInfo: TestInfo, name: string): Promise<void> {
  await page.screenshot({ path: testInfo.outputPath(`${name}.png`), fullPage: true });
}

/** Downloads an image through its Download button into `path` (the page must lack showSaveFilePicker, or the app asks where to save). */
export async function download(page: Page, name: string, path: string): Promise<void> {
  const event = page.waitForEvent('download');
  await page.getByRole('table').getByRole('button', { name: `Download ${name}`, exact: true }).click();
  await (await event).saveAs(path);
}

/** Opens the stop lesson, sets it up, predicts that the job pauses and presses Run lesson; the Lessons region. */
export async function runStopLesson(page: Page): Promise<Locator> {
  await openApp(page);
  await page.goto('/#lesson/stop');
  const region = page.getByRole('region', { name: 'Lessons' });
  await region.getByRole('button', { name: 'Set up' }).click();
  await region.getByRole('radio', { name: 'the job pauses until someone resumes it' }).check();
  await region.getByRole('button', { name: 'Run lesson' }).click();
  return region;
}
