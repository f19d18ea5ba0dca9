/**
 * The images section: the list of images (as the worker reads them from
 * OPFS), storage, imports (file picker, drag and drop, URL, NBD export), blank images,
 * deletion and downloads, and the message line under its toolbar (an
 * error looks like one, in words from messages.ts, and goes with the next
 * action). An image a job holds is shown as held, by which job and how.
 */
import type { FormatName } from '../format/image-format.js';
import type { ErrorPolicy } from '../qapi/policies.js';
import { formatSize, parseSize } from '../util/size.js';
import type { ImageEntry } from '../worker/api-types.js';
import { byId, h } from './dom.js';
import { saveImage } from './download.js';
import { nameMismatch } from './format-names.js';
import { worker } from './bridge.js';
import type { JobNames } from './job-store.js';
import { type MessageContext, explain } from './messages.js';
import { type StorageFacts, persistenceWords, readStorage, storageLine } from './storage.js';

/** How often a page looks again while another tab holds one of its images. */
const OTHER_TABS_MS = 2000;

export interface ImagesHooks {
  /** An import started: the page shows it as the current job. */
  onJobStarted(id: string, names: JobNames): void;
  onImagesChanged(images: ImageEntry[]): void;
  /** Mirror...: the image becomes the Mirror form's source. */
  onMirror(image: string): void;
  /** The browser's storage as it reports it now (read with each look at the list). */
  onStorage(facts: StorageFacts): void;
}

/** Says `text` on the section's message line, as news or as an error. */
function say(text: string, tone: 'status' | 'error' = 'status'): void {
  const line = byId('images-message');
  line.textContent = text;
  line.classList.toggle('error', tone === 'error' && text !== '');
}

/** The "In use" column: which job holds the image and how, else who else does. */
function inUseWords(img: ImageEntry): string {
  if (img.job) {
    if (img.job.kind === 'import' && img.job.role === 'target') return `being imported (${img.job.id})`;
    return `${img.job.role} of ${img.job.id}`;
  }
  if (img.inUse) return img.inUse;
  return img.interruptedJob !== undefined ? `incomplete: ${img.interruptedJob} was interrupted` : '';
}

/** The header's storage line, as the browser reports it; the facts, for the jobs that ran out of space. */
async function refreshStorage(images: readonly ImageEntry[]): Promise<StorageFacts | null> {
  const facts = await readStorage(imagesBytes(images));
  if (!facts) return null;
  byId('storage').replaceChildren(
    `${storageLine(facts)} · ${persistenceWords(facts)}`,
    facts.persisted ? '.' : ' · ',
    facts.persisted ? '' : h('button', { type: 'button', class: 'link', onclick: () => void requestPersistence() }, 'Keep my images (persistent storage)'),
  );
  return facts;
}

async function requestPersistence(): Promise<void> {
  const granted = (await navigator.storage.persist?.()) ?? false;
  say(granted ? 'The browser will keep these images unless you remove them.' : 'The browser did not grant persistent storage; images may be evicted under storage pressure.');
  await refreshStorage(await worker().listImages());
}

/** What the images take of the browser's storage, by their files' lengths. */
export function imagesBytes(images: readonly ImageEntry[]): number {
  return images.reduce((sum, i) => sum + i.fileSize, 0);
}

/** What an image takes of the browser's storage (its file's length, as the browser counts it), and the data it holds. */
function allocatedCell(img: ImageEntry): HTMLTableCellElement {
  const note =
    img.format === 'raw'
      ? ' (raw: its whole size)'
      : img.dataBytes !== undefined
        ? ` (data ${formatSize(img.dataBytes)})`
        : '';
  return h('td', { 'data-label': 'Allocated' }, formatSize(img.fileSize), note ? h('span', { class: 'muted' }, note) : null);
}

export class ImagesSection {
  private images: ImageEntry[] = [];
  /** Imports under way: job id -> the image's name. */
  private readonly imports = new Map<string, string>();
  private othersTimer: number | undefined;

  constructor(private readonly hooks: ImagesHooks) {
    byId('new-demo').addEventListener('click', () => void this.demo());
    const input = byId<HTMLInputElement>('file-input');
    byId('import-file').addEventListener('click', () => input.click());
    input.addEventListener('change', () => {
      const file = input.files?.[0];
      input.value = '';
      if (file) void this.importFile(file);
    });
    const section = byId('images-section');
    section.addEventListener('dragover', (e) => {
      if (e.dataTransfer?.types.includes('Files')) {
        e.preventDefault();
        section.classList.add('dropping');
      }
    });
    section.addEventListener('dragleave', () => section.classList.remove('dropping'));
    section.addEventListener('drop', (e) => {
      e.preventDefault();
      section.classList.remove('dropping');
      const file = e.dataTransfer?.files[0];
      if (file) void this.importFile(file);
    });
    byId<HTMLFormElement>('url-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.importUrl(byId<HTMLInputElement>('url').value.trim());
    });
    byId<HTMLFormElement>('create-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.create();
    });
  }

  get list(): ImageEntry[] {
    return this.images;
  }

  /** Says `text` on the section's message line. */
  say(text: string, tone: 'status' | 'error' = 'status'): void {
    say(text, tone);
  }

  /** Which job holds an image, as the list last showed. */
  private holder(name: string): ImageEntry['job'] {
    return this.images.find((i) => i.name === name)?.job;
  }

  async refresh(): Promise<void> {
    this.images = await worker().listImages();
    const body = byId<HTMLTableElement>('images').tBodies[0]!;
    body.replaceChildren(
      ...this.images.map((img) =>
        h(
          'tr',
          { title: [img.inUse, img.note].filter(Boolean).join('; ') },
          h('th', { scope: 'row' }, img.name),
          // data-label names each cell where a narrow screen shows the row as a card (style.css).
          h('td', { 'data-label': 'Format' }, img.format),
          h('td', { 'data-label': 'Virtual size' }, formatSize(img.virtualSize)),
          allocatedCell(img),
          h('td', { 'data-label': 'Backing file' }, img.backingFile ?? ''),
          h('td', { class: img.job || img.interruptedJob !== undefined ? 'busy' : 'muted', 'data-label': 'In use' }, inUseWords(img)),
          h('td', { class: 'actions' },
            h('button', { type: 'button', class: 'small', 'aria-label': `Mirror ${img.name}...`, onclick: () => this.hooks.onMirror(img.name) }, 'Mirror...'),
            h('button', { type: 'button', class: 'small', 'aria-label': `Download ${img.name}`, onclick: () => void this.download(img.name) }, 'Download'),
            h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${img.name}`, onclick: () => void this.remove(img.name) }, 'Delete'),
          ),
        ),
      ),
    );
    if (this.images.length === 0) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No images yet: make the demo image, import one, or create a blank one.')));
    this.hooks.onImagesChanged(this.images);
    this.watchOtherTabs();
    const facts = await refreshStorage(this.images).catch(() => null);
    if (facts) this.hooks.onStorage(facts);
  }

  /**
   * While another tab holds an image, look again every few seconds: when it
   * lets go (its job ended, or the tab was closed), this page shows the
   * image free, and its interrupted job (if any) to resume from here.
   */
  private watchOtherTabs(): void {
    clearTimeout(this.othersTimer);
    if (!this.images.some((i) => i.inUse && !i.job)) return;
    this.othersTimer = window.setTimeout(() => void this.refresh().catch(() => {}), OTHER_TABS_MS);
  }

  /** Runs an action; what goes wrong is said as an error, in words about `ctx`. */
  private async act(fn: () => Promise<unknown>, ctx: MessageContext = {}): Promise<void> {
    try {
      await fn();
    } catch (err) {
      say(explain(err, { ...ctx, holder: (name) => this.holder(name) }), 'error');
    }
  }

  private async demo(): Promise<void> {
    const button = byId<HTMLButtonElement>('new-demo');
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    say('Creating the demo image…');
    await this.act(async () => {
      const entry = await worker().createDemoImage();
      say(`Created ${entry.name} (${formatSize(entry.virtualSize)}).`);
      await this.refresh();
    }, { image: 'demo.raw' });
    button.disabled = false;
    // Disabled, the button lost focus: it gets it back (another demo, or Tab on to the rest).
    if (hadFocus && (document.activeElement === document.body || document.activeElement === null)) button.focus();
  }

  private uniqueName(wanted: string): string {
    const taken = new Set(this.images.map((i) => i.name));
    if (!taken.has(wanted)) return wanted;
    const dot = wanted.lastIndexOf('.');
    const [stem, ext] = dot > 0 ? [wanted.slice(0, dot), wanted.slice(dot)] : [wanted, ''];
    for (let i = 2; ; i++) if (!taken.has(`${stem}-${i}${ext}`)) return `${stem}-${i}${ext}`;
  }

  private async importFile(file: File): Promise<void> {
    const name = this.uniqueName(file.name || 'imported.img');
    say(`Importing ${file.name} (${formatSize(file.size)}) as ${name}…`);
    await this.act(
      async () => {
        const id = await worker().importFile(file, name);
        this.imports.set(id, name);
        this.hooks.onJobStarted(id, { kind: 'import', source: file.name, target: name });
        await this.refresh();
      },
      { image: name },
    );
  }

  private async importUrl(url: string): Promise<void> {
    if (!url) {
      say('Type the URL of an image first.', 'error');
      return;
    }
    let base = 'download.img';
    try {
      base = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? base) || base;
    } catch {
      say(`"${url}" is not a URL: type one that starts with https:// or http://.`, 'error');
      return;
    }
    const name = this.uniqueName(base);
    say(`Importing ${url} as ${name}…`);
    const onError = byId<HTMLSelectElement>('url-on-error').value as ErrorPolicy;
    await this.act(
      async () => {
        const id = await worker().importUrl(url, name, { 'on-source-error': onError });
        this.imports.set(id, name);
        this.hooks.onJobStarted(id, { kind: 'import', source: url, target: name });
        await this.refresh();
      },
      { image: name, url },
    );
  }

  /** Copies an NBD export's bytes into a new image named after the export (imports retry a failed request). */
  async importExport(uri: string, exportName: string): Promise<void> {
    const last = exportName.split('/').filter(Boolean).pop()?.replace(/[\\\0]/g, '_').slice(0, 100) ?? '';
    const name = this.uniqueName(last && last !== '.' && last !== '..' && !last.includes('.dmpart-') ? last : 'nbd-export.img');
    say(`Importing ${uri} as ${name}…`);
    await this.act(
      async () => {
        const id = await worker().importNbd(uri, name);
        this.imports.set(id, name);
        this.hooks.onJobStarted(id, { kind: 'import', source: uri, target: name });
        await this.refresh();
      },
      { image: name },
    );
  }

  /** An import resumed after a reload: its end is said as any other's. */
  watchImport(id: string, name: string): void {
    this.imports.set(id, name);
  }

  /** A job ended: if it was an import, say how it went (and whether its name and content disagree on the format). */
  jobEnded(id: string, outcome: 'completed' | 'cancelled' | 'failed', error?: string): void {
    const name = this.imports.get(id);
    if (name === undefined) return;
    this.imports.delete(id);
    if (outcome !== 'completed') {
      say(outcome === 'cancelled' ? `The import of ${name} was cancelled; what was copied so far is in ${name}.` : `The import of ${name} failed: ${error ?? 'an error'}.`, outcome === 'failed' ? 'error' : 'status');
      return;
    }
    void this.refresh().then(() => {
      const mismatch = nameMismatch(name, this.images.find((i) => i.name === name)?.format);
      say(`Imported ${name}: it is ready to mirror.${mismatch}`, mismatch ? 'error' : 'status');
    });
  }

  private async create(): Promise<void> {
    const name = byId<HTMLInputElement>('create-name').value.trim();
    const format = byId<HTMLSelectElement>('create-format').value as FormatName;
    say('');
    await this.act(
      async () => {
        const size = parseSize(byId<HTMLInputElement>('create-size').value, 'Image size');
        if (size === 0) throw new Error('Image size must be more than 0 (for example 64M).');
        const entry = await worker().createImage(name, format, size);
        say(`Created ${entry.name}: ${entry.format}, ${formatSize(entry.virtualSize)}.`);
        await this.refresh();
      },
      { image: name },
    );
  }

  /** Saves an image out of the browser (the job panel's Download too). */
  async download(name: string): Promise<void> {
    say('');
    await this.act(async () => {
      if (await saveImage(name)) say(`Saved ${name}.`);
    }, { image: name });
  }

  /** Deletes an image once the person confirms; one somebody holds is refused before anybody is asked. */
  async remove(name: string): Promise<void> {
    say('');
    try {
      // The worker checks again as it deletes.
      await worker().checkDeletable(name);
    } catch (err) {
      say(explain(err, { image: name, holder: (n) => this.holder(n) }), 'error');
      return;
    }
    if (!confirm(`Delete ${name}? This cannot be undone.`)) return;
    await this.act(async () => {
      await worker().deleteImage(name);
      say(`Deleted ${name}.`);
      await this.refresh();
    }, { image: name });
  }
}
