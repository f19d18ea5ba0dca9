/**
 * The mirror form: source and target, the job's options (QEMU's names,
 * QEMU's defaults where a field is empty), Start mirror, and the form's
 * error line. The speed limit also applies live to the job shown.
 */
import type { FormatName } from '../format/image-format.js';
import type { ErrorPolicy } from '../mirror/error-policy.js';
import type { CopyMode, MirrorOptions, SyncMode } from '../mirror/options.js';
import { type SourceRef, describeSource } from '../shared/source-ref.js';
import { jobIsGone } from '../shared/worker-error.js';
import { parseSize } from '../util/size.js';
import type { ImageEntry } from '../worker/api-types.js';
import { byId } from './dom.js';
import { worker } from './bridge.js';
import type { JobNames } from './job-view.js';
import { explain } from './messages.js';

export interface MirrorFormHooks {
  /** The job shown: a new speed limit applies to it at once. */
  currentJob(): string | null;
  /** A mirror started from the form, named by its source and target. */
  onStarted(id: string, names: JobNames): Promise<void>;
  /** Which job holds an image, as the list shows. */
  holder(image: string): ImageEntry['job'];
}

const value = (id: string) => byId<HTMLInputElement | HTMLSelectElement>(id).value.trim();

export class MirrorForm {
  constructor(private readonly hooks: MirrorFormHooks) {
    byId<HTMLFormElement>('mirror-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.start();
    });
    byId('speed').addEventListener('change', () => void this.applySpeed());
  }

  /** Options from the form, QEMU's defaults where a field is empty. */
  options(): MirrorOptions {
    const options: MirrorOptions = { sync: value('sync') as SyncMode };
    if (value('granularity')) options.granularity = parseSize(value('granularity'), 'Granularity');
    if (value('buf-size')) options['buf-size'] = parseSize(value('buf-size'), 'Buffer size');
    if (value('speed')) options.speed = parseSize(value('speed'), 'Speed limit');
    options['on-source-error'] = value('on-source-error') as ErrorPolicy;
    options['on-target-error'] = value('on-target-error') as ErrorPolicy;
    options['copy-mode'] = value('copy-mode') as CopyMode;
    return options;
  }

  /** The sources on offer (the images, and files picked on this page) and the target names suggested. */
  async setImages(list: ImageEntry[]): Promise<void> {
    const select = byId<HTMLSelectElement>('source');
    const selected = select.value;
    const picked = await worker().pickedFileNames();
    const options = [
      ...list.map((img) => new Option(img.name, JSON.stringify({ kind: 'opfs', name: img.name } satisfies SourceRef))),
      ...picked.map((name) => new Option(`picked file: ${name}`, JSON.stringify({ kind: 'file', name } satisfies SourceRef))),
    ];
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === selected)) select.value = selected;
    byId('image-names').replaceChildren(...list.map((img) => new Option(img.name)));
  }

  private say(text: string): void {
    byId('form-error').textContent = text;
  }

  private async start(): Promise<void> {
    this.say('');
    try {
      if (!value('source')) throw new Error('Pick a source image (or make the demo image first).');
      const source = JSON.parse(value('source')) as SourceRef;
      const target = value('target');
      if (!target) throw new Error('Name a target image: an existing one, or a new name.');
      // The worker refuses a target that is the source or in its backing chain, before anything is written.
      const targetFormat = value('target-format') as FormatName | '';
      const id = await worker().startMirror({ source, target, options: this.options(), ...(targetFormat ? { targetFormat } : {}) });
      await this.hooks.onStarted(id, { kind: 'mirror', source: describeSource(source), target });
      this.say('');
    } catch (err) {
      this.say(explain(err, { image: value('target'), holder: (name) => this.hooks.holder(name) }));
    }
  }

  /** The speed limit applies live to the job shown. */
  private async applySpeed(): Promise<void> {
    const id = this.hooks.currentJob();
    if (!id) return;
    try {
      const speed = value('speed') ? parseSize(value('speed'), 'Speed limit') : 0;
      await worker().execute('block-job-set-speed', { device: id, speed });
      this.say('');
    } catch (err) {
      // A job that is not running any more needs no limit; a bad value is said (the form keeps it for the next job).
      if (!jobIsGone(err)) this.say(explain(err));
    }
  }
}
