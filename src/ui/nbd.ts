/**
 * The NBD section: connect to an export behind a WebSocket bridge
 * (websockify in front of qemu-nbd or nbdkit), see what it is, then use it
 * as the mirror's source, import it into this browser, or make it the
 * mirror's target (not a read-only one). Connecting only looks: each job
 * opens the export again. The section's message line says what happened,
 * or which step failed (the worker's errors, in words from messages.ts).
 */
import { formatSize } from '../util/size.js';
import type { NbdExportInfo } from '../worker/api-types.js';
import { byId, h } from './dom.js';
import { worker } from './bridge.js';
import { explain } from './messages.js';

export interface NbdHooks {
  /** An export was connected: the mirror form offers it. */
  onConnected(info: NbdExportInfo): Promise<void>;
  /** An export was forgotten: no longer offered. */
  onForgotten(uri: string): Promise<void>;
  useAsSource(info: NbdExportInfo): Promise<void>;
  useAsTarget(info: NbdExportInfo): void;
  importExport(info: NbdExportInfo): Promise<void>;
}

/** Says `text` on the section's message line, as news or as an error. */
function say(text: string, tone: 'status' | 'error' = 'status'): void {
  const line = byId('nbd-message');
  line.textContent = text;
  line.classList.toggle('error', tone === 'error' && text !== '');
}

/** What an export holds: "raw, 6.00 MiB, writable". */
function what(info: NbdExportInfo): string {
  const size = info.format === 'qcow2' ? `qcow2, ${formatSize(info.virtualSize)} (the export holds ${formatSize(info.size)})` : `raw, ${formatSize(info.size)}`;
  return `${size}, ${info.readOnly ? 'read-only' : 'writable'}`;
}

export class NbdSection {
  /** Exports connected on this page, by URI. */
  private readonly exports = new Map<string, NbdExportInfo>();

  constructor(private readonly hooks: NbdHooks) {
    byId<HTMLFormElement>('nbd-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.connect();
    });
  }

  /** Presses Connect: the export is looked at, listed and offered to the mirror form, or the line says what stands in the way. */
  private async connect(): Promise<void> {
    const url = byId<HTMLInputElement>('nbd-url').value.trim();
    const exportName = byId<HTMLInputElement>('nbd-export').value.trim();
    const format = byId<HTMLSelectElement>('nbd-format').value as 'raw' | 'qcow2';
    if (!url) {
      say('Type the WebSocket URL of the bridge first, such as ws://localhost:5701.', 'error');
      return;
    }
    const button = byId<HTMLButtonElement>('nbd-connect');
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    say(`Connecting to ${url}…`);
    try {
      const info = await worker().connectNbd(url, exportName, format);
      this.exports.set(info.uri, info);
      this.render();
      await this.hooks.onConnected(info);
      const can = info.readOnly ? " It can be the mirror's source or be imported, not a target." : '';
      say(`Connected to ${info.uri}: ${what(info)}.${can}`);
    } catch (err) {
      say(explain(err, { url }), 'error');
    } finally {
      button.disabled = false;
      // Disabled, the button lost focus: it gets it back.
      if (hadFocus && (document.activeElement === document.body || document.activeElement === null)) button.focus();
    }
  }

  private render(): void {
    byId('nbd-exports').replaceChildren(...[...this.exports.values()].map((info) => this.item(info)));
  }

  private item(info: NbdExportInfo): HTMLLIElement {
    const { uri } = info;
    const button = (text: string, label: string, action: () => Promise<void> | void, extra: Record<string, string | boolean> = {}) =>
      h('button', { type: 'button', class: 'small', 'aria-label': label, onclick: () => void this.act(action), ...extra }, text);
    return h(
      'li',
      {},
      h('strong', {}, uri),
      `: ${what(info)}. `,
      button('Use as source', `Use as source: ${uri}`, async () => {
        await this.hooks.useAsSource(info);
        say(`${uri} is the mirror's source: name a target, then press Start mirror.`);
      }),
      ' ',
      button('Import', `Import ${uri}`, async () => {
        say('');
        await this.hooks.importExport(info);
      }),
      ' ',
      button(
        'Use as target',
        `Use as target: ${uri}`,
        () => {
          this.hooks.useAsTarget(info);
          say(`${uri} is the mirror's target, read as ${info.format}: choose a source of ${formatSize(info.virtualSize)}, then press Start mirror.`);
        },
        // A read-only export is never written: the list says why the button is off.
        info.readOnly ? { disabled: true, title: 'read-only export' } : {},
      ),
      ' ',
      button(
        'Forget',
        `Forget ${uri}`,
        async () => {
          this.exports.delete(uri);
          this.render();
          await this.hooks.onForgotten(uri);
          say(`Forgot ${uri}.`);
          byId('nbd-url').focus();
        },
        { class: 'small secondary' },
      ),
    );
  }

  private async act(fn: () => Promise<void> | void): Promise<void> {
    try {
      await fn();
    } catch (err) {
      say(explain(err), 'error');
    }
  }
}
