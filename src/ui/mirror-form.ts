/**
 * The mirror form: source and target, the job's options (QEMU's names,
 * QEMU's defaults where a field is empty), Start mirror, and the form's
 * error line. The speed limit also applies live to the job shown. NBD
 * exports connected on this page are offered as sources, and as targets
 * (by their nbd+ws:// name).
 */
import type { FormatName } from '../format/image-format.js';
import type { ErrorPolicy } from '../qapi/policies.js';
import type { CopyMode, MirrorOptions, SyncMode } from '../mirror/options.js';
import { type SourceRef, describeSource } from '../shared/source-ref.js';
import { jobIsGone } from '../shared/worker-error.js';
import { parseSize } from '../util/size.js';
import type { ImageEntry, NbdExportInfo } from '../worker/api-types.js';
import { byId } from './dom.js';
import { formatFromName } from './format-names.js';
import { noteCommand, worker } from './bridge.js';
import type { JobNames } from './job-store.js';
import { explain } from './messages.js';

export interface MirrorFormHooks {
  /** The job shown: a new speed limit applies to it at once. */
  currentJob(): string | null;
  /** A mirror started from the form, named by its source and target. */
  onStarted(id: string, names: JobNames): Promise<void>;
  /** Which job holds an image, as the list shows. */
  holder(image: string): ImageEntry['job'];
  /** Faults and a guest armed for the next job. */
  armed(): { faults: string[]; guest?: number };
}

const value = (id: string) => byId<HTMLInputElement | HTMLSelectElement>(id).value.trim();

/** What each error policy does, in one line (QEMU's block_job_error_action). */
const POLICY_WORDS: Record<ErrorPolicy, string> = {
  report: 'the first error fails the job.',
  ignore: 'the error is logged and the chunk stays dirty and is retried, so the job cannot converge while the error lasts.',
  stop: 'the job pauses (io-status failed); Resume retries the range.',
  enospc: 'ENOSPC pauses the job (io-status nospace); any other error fails it.',
  auto: 'as enospc for a job: ENOSPC pauses it, any other error fails it.',
};

/** A size as the form's fields take it: 4M, 64K, or bytes. */
function sizeWords(bytes: number): string {
  if (bytes % (1 << 20) === 0) return `${bytes / (1 << 20)}M`;
  if (bytes % 1024 === 0) return `${bytes / 1024}K`;
  return String(bytes);
}

/** How an export is offered as a source. */
function exportRef(e: NbdExportInfo): SourceRef {
  return { kind: 'nbd', uri: e.uri, format: e.format };
}

export class MirrorForm {
  private images: ImageEntry[] = [];
  /** NBD exports connected on this page, by URI. */
  private readonly exports = new Map<string, NbdExportInfo>();

  constructor(private readonly hooks: MirrorFormHooks) {
    byId<HTMLFormElement>('mirror-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.start();
    });
    for (const side of ['source', 'target'] as const) {
      const select = byId<HTMLSelectElement>(`on-${side}-error`);
      const explainPolicy = () => (byId(`on-${side}-error-hint`).textContent = `On ${side} error, ${select.value}: ${POLICY_WORDS[select.value as ErrorPolicy]}`);
      select.addEventListener('change', explainPolicy);
      explainPolicy();
    }
    byId('speed').addEventListener('change', () => void this.applySpeed());
    for (const id of ['target', 'target-format', 'source']) byId(id).addEventListener('input', () => this.sayTarget());
    this.sayTarget();
  }

  /** The source's format, as the list describes it. */
  private sourceFormat(): FormatName | null {
    try {
      const source = value('source') ? (JSON.parse(value('source')) as SourceRef) : null;
      if (source?.kind === 'opfs') return this.images.find((i) => i.name === source.name)?.format ?? null;
      if (source?.kind === 'nbd') return source.format ?? 'raw';
    } catch {
      // Not a source the form made: nothing to say.
    }
    return null;
  }

  /** The format Start mirror asks for: the one chosen, else the target name's, else none (the source's, for a new target). */
  private targetFormat(): FormatName | null {
    return (value('target-format') as FormatName | '') || formatFromName(value('target'));
  }

  /** Says what Start mirror will make of the target, as the fields are now. */
  private sayTarget(): void {
    const target = value('target');
    const existing = this.images.find((i) => i.name === target);
    const chosen = this.targetFormat();
    const from = value('target-format') ? '' : formatFromName(target) ? ' (from its name)' : ' (the source’s format)';
    byId('target-format-hint').textContent = !target
      ? 'Type a name for the target: copy.qcow2 makes a qcow2 image, copy.raw a raw one.'
      : existing
        ? `${target} exists: the mirror writes into it as it is (${existing.format}).`
        : `Start mirror makes a new ${chosen ?? this.sourceFormat() ?? 'image in the source’s format'} image, ${target}${from}.`;
  }

  /** Makes an image of the list the source; the Target field takes the focus (the list's Mirror... action). */
  useSource(name: string): void {
    byId<HTMLSelectElement>('source').value = JSON.stringify({ kind: 'opfs', name } satisfies SourceRef);
    this.sayTarget();
    const target = byId<HTMLInputElement>('target');
    target.scrollIntoView({ block: 'center' });
    target.focus();
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

  /** The sources on offer (the images, files picked on this page, NBD exports) and the target names suggested. */
  async setImages(list: ImageEntry[]): Promise<void> {
    this.images = list;
    const select = byId<HTMLSelectElement>('source');
    const selected = select.value;
    const picked = await worker().pickedFileNames();
    const exports = [...this.exports.values()];
    const options = [
      ...list.map((img) => new Option(img.name, JSON.stringify({ kind: 'opfs', name: img.name } satisfies SourceRef))),
      ...picked.map((name) => new Option(`picked file: ${name}`, JSON.stringify({ kind: 'file', name } satisfies SourceRef))),
      ...exports.map((e) => new Option(`NBD export: ${e.uri}`, JSON.stringify(exportRef(e)))),
    ];
    // Before any image exists the list says so (an empty select is a narrow blank box); Start mirror then says what to do.
    select.replaceChildren(...(options.length ? options : [new Option('no images yet', '')]));
    if ([...select.options].some((o) => o.value === selected)) select.value = selected;
    this.sayTarget();
    byId('image-names').replaceChildren(...list.map((img) => new Option(img.name)), ...exports.filter((e) => !e.readOnly).map((e) => new Option(e.uri)));
  }

  /** An export connected (or connected again, maybe changed): offered as a source, and as a target unless read-only. */
  async addExport(info: NbdExportInfo): Promise<void> {
    this.exports.set(info.uri, info);
    await this.setImages(this.images);
  }

  /** An export no longer offered. */
  async removeExport(uri: string): Promise<void> {
    this.exports.delete(uri);
    await this.setImages(this.images);
  }

  /** Makes a connected export the source; the Source field takes the focus. */
  async useExportSource(info: NbdExportInfo): Promise<void> {
    await this.addExport(info);
    const select = byId<HTMLSelectElement>('source');
    select.value = JSON.stringify(exportRef(info));
    select.focus();
  }

  /** Makes a connected export the target, read as its format; the Target field takes the focus. */
  useExportTarget(info: NbdExportInfo): void {
    byId<HTMLInputElement>('target').value = info.uri;
    byId<HTMLSelectElement>('target-format').value = info.format;
    byId('target').focus();
  }

  private say(text: string): void {
    byId('form-error').textContent = text;
  }

  /** Presses Start mirror: the new job's id, or null when it was refused (the form says why). */
  async start(): Promise<string | null> {
    this.say('');
    try {
      if (!value('source')) throw new Error('Pick a source image (or make the demo image first).');
      const source = JSON.parse(value('source')) as SourceRef;
      const target = value('target');
      if (!target) {
        byId('target').focus();
        throw new Error('Type a name for the target image: a new one (copy.qcow2 makes a qcow2 image, copy.raw a raw one) or an existing one.');
      }
      // The worker refuses a target that is the source or in its backing chain, before anything is written.
      const targetFormat = this.targetFormat();
      const id = await worker().startMirror({ source, target, options: this.options(), ...(targetFormat ? { targetFormat } : {}), ...this.hooks.armed() });
      await this.hooks.onStarted(id, { kind: 'mirror', source: describeSource(source), target });
      this.say('');
      return id;
    } catch (err) {
      this.say(explain(err, { image: value('target'), holder: (name) => this.hooks.holder(name) }));
      return null;
    }
  }

  /** Fills the form as a lesson sets it up: an OPFS source, a target, and the options (QEMU's defaults for the rest). */
  fill(source: string, target: string, targetFormat: FormatName | '', o: MirrorOptions): void {
    const set = (id: string, v: string) => (byId<HTMLInputElement | HTMLSelectElement>(id).value = v);
    set('source', JSON.stringify({ kind: 'opfs', name: source } satisfies SourceRef));
    set('target', target);
    set('target-format', targetFormat);
    set('sync', o.sync ?? 'full');
    set('granularity', o.granularity ? sizeWords(o.granularity) : '');
    set('buf-size', o['buf-size'] ? sizeWords(o['buf-size']) : '');
    set('speed', o.speed ? sizeWords(o.speed) : '');
    set('on-source-error', o['on-source-error'] ?? 'report');
    set('on-target-error', o['on-target-error'] ?? 'report');
    set('copy-mode', o['copy-mode'] ?? 'background');
    this.sayTarget();
    for (const id of ['on-source-error', 'on-target-error']) byId(id).dispatchEvent(new Event('change'));
  }

  /** The speed limit applies live to the job shown. */
  private async applySpeed(): Promise<void> {
    const id = this.hooks.currentJob();
    if (!id) return;
    try {
      const speed = value('speed') ? parseSize(value('speed'), 'Speed limit') : 0;
      noteCommand(id);
      await worker().execute('block-job-set-speed', { device: id, speed });
      this.say('');
    } catch (err) {
      // A job that is not running any more needs no limit; a bad value is said (the form keeps it for the next job).
      if (!jobIsGone(err)) this.say(explain(err));
    }
  }
}
