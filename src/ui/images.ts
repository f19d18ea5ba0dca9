/**
 * The images section: the list of images (as the worker reads them from
 * OPFS), storage, imports (file picker, drag and drop, URL), blank images,
 * deletion and downloads, and the message line under its toolbar.
 */
import type { FormatName } from '../format/image-format.js';
import type { MirrorOptions } from '../mirror/options.js';
import { formatSize, parseSize } from '../util/size.js';
import type { ImageEntry } from '../worker/api-types.js';
import { byId, errorText, h } from './dom.js';
import { worker } from './bridge.js';

export interface ImagesHooks {
  /** An import started: the page shows it as the current job. */
  onJobStarted(id: string): void;
  /** Options an import takes from the mirror form (policies, speed). */
  importOptions(): Partial<MirrorOptions>;
  onImagesChanged(images: ImageEntry[]): void;
}

const message = () => byId('images-message');

function say(text: string): void {
  message().textContent = text;
}

async function refreshStorage(): Promise<void> {
  const el = byId('storage');
  if (!navigator.storage?.estimate) return;
  const { usage = 0, quota = 0 } = await navigator.storage.estimate();
  const persisted = (await navigator.storage.persisted?.()) ?? false;
  el.replaceChildren(
    `Storage: ${formatSize(usage)} used, ${formatSize(Math.max(0, quota - usage))} available`,
    persisted ? ' · kept by the browser (persistent).' : ' · ',
    persisted
      ? ''
      : h('button', { type: 'button', class: 'link', onclick: () => void requestPersistence() }, 'Keep my images (persistent storage)'),
  );
}

async function requestPersistence(): Promise<void> {
  const granted = (await navigator.storage.persist?.()) ?? false;
  say(granted ? 'The browser will keep these images unless you remove them.' : 'The browser did not grant persistent storage; images may be evicted under storage pressure.');
  await refreshStorage();
}

type SavePicker = (options: { suggestedName: string }) => Promise<FileSystemFileHandle & { createWritable(): Promise<WritableStream> }>;

/**
 * Saves an image out of OPFS, as the worker reads it: through a save
 * picker where the browser has one, else a download link. Either is
 * refused (with the lock's message) while a job writes the image. The
 * picker's stream holds a shared lock until it is saved, so no job starts
 * writing the image meanwhile; the link's File is a snapshot, so should
 * the image change, the browser fails the download rather than mix two
 * versions. Nothing is read into the page's memory.
 */
async function download(name: string): Promise<void> {
  const picker = (window as unknown as { showSaveFilePicker?: SavePicker }).showSaveFilePicker;
  if (picker) {
    const bytes = await worker().imageStream(name);
    try {
      let handle: Awaited<ReturnType<SavePicker>>;
      try {
        handle = await picker({ suggestedName: name });
      } catch (err) {
        if ((err as Error).name === 'AbortError') {
          await bytes.cancel();
          return;
        }
        throw err;
      }
      await bytes.pipeTo(await handle.createWritable());
    } catch (err) {
      // Lets go of the lock (a stream that pipeTo ended already ignores this).
      await bytes.cancel().catch(() => {});
      throw err;
    }
    say(`Saved ${name}.`);
    return;
  }
  const file = await worker().imageFile(name);
  const url = URL.createObjectURL(file);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export class ImagesSection {
  private images: ImageEntry[] = [];
  /** Imports under way: job id -> the image's name. */
  private readonly imports = new Map<string, string>();

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
  say(text: string): void {
    say(text);
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
          h('td', {}, img.format),
          h('td', {}, formatSize(img.virtualSize)),
          h('td', {}, formatSize(img.fileSize)),
          h('td', {}, img.backingFile ?? ''),
          h('td', { class: 'muted' }, img.inUse ?? ''),
          h(
            'td',
            { class: 'actions' },
            h('button', { type: 'button', class: 'small', 'aria-label': `Download ${img.name}`, onclick: () => void this.act(() => download(img.name)) }, 'Download'),
            h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${img.name}`, onclick: () => void this.remove(img.name) }, 'Delete'),
          ),
        ),
      ),
    );
    if (this.images.length === 0) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No images yet: make the demo image, import one, or create a blank one.')));
    this.hooks.onImagesChanged(this.images);
    await refreshStorage().catch(() => {});
  }

  private async act(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      say(errorText(err));
    }
  }

  private async demo(): Promise<void> {
    const button = byId<HTMLButtonElement>('new-demo');
    button.disabled = true;
    say('Creating the demo image…');
    await this.act(async () => {
      const entry = await worker().createDemoImage();
      say(`Created ${entry.name} (${formatSize(entry.virtualSize)}).`);
      await this.refresh();
    });
    button.disabled = false;
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
    await this.act(async () => {
      const id = await worker().importFile(file, name, this.hooks.importOptions());
      this.imports.set(id, name);
      this.hooks.onJobStarted(id);
      await this.refresh();
    });
  }

  private async importUrl(url: string): Promise<void> {
    if (!url) {
      say('Type the URL of an image first.');
      return;
    }
    let base = 'download.img';
    try {
      base = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? base) || base;
    } catch {
      say(`"${url}" is not a URL.`);
      return;
    }
    const name = this.uniqueName(base);
    say(`Importing ${url} as ${name}…`);
    await this.act(async () => {
      const id = await worker().importUrl(url, name, this.hooks.importOptions());
      this.imports.set(id, name);
      this.hooks.onJobStarted(id);
      await this.refresh();
    });
  }

  /** A job ended: if it was an import, say how it went. */
  jobEnded(id: string, outcome: 'completed' | 'cancelled' | 'failed', error?: string): void {
    const name = this.imports.get(id);
    if (name === undefined) return;
    this.imports.delete(id);
    say(
      outcome === 'completed'
        ? `Imported ${name}.`
        : outcome === 'cancelled'
          ? `The import of ${name} was cancelled; what was copied so far is in ${name}.`
          : `The import of ${name} failed: ${error ?? 'an error'}.`,
    );
  }

  private async create(): Promise<void> {
    const name = byId<HTMLInputElement>('create-name').value.trim();
    const format = byId<HTMLSelectElement>('create-format').value as FormatName;
    await this.act(async () => {
      const size = parseSize(byId<HTMLInputElement>('create-size').value, 'Image size');
      const entry = await worker().createImage(name, format, size);
      say(`Created ${entry.name}: ${entry.format}, ${formatSize(entry.virtualSize)}.`);
      await this.refresh();
    });
  }

  private async remove(name: string): Promise<void> {
    // An image somebody holds is refused before anybody is asked to confirm (the worker checks again as it deletes).
    try {
      await worker().checkDeletable(name);
    } catch (err) {
      say(errorText(err));
      return;
    }
    if (!confirm(`Delete ${name}? This cannot be undone.`)) return;
    await this.act(async () => {
      await worker().deleteImage(name);
      say(`Deleted ${name}.`);
      await this.refresh();
    });
  }
}
