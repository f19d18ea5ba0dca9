/**
 * A Linux guest under v86 (an x86 emulator compiled to WebAssembly), with a
 * GuestDisk as its first IDE disk (/dev/sda) and its serial console as text:
 * the same code boots it in a worker of the page and under Node. It knows
 * neither: the caller brings the files (`npm run guest` makes them) and
 * v86's WebAssembly module.
 */
import { V86 } from 'v86';
import type { GuestDisk } from './disk.js';
import { GUEST_PROMPT } from './words.js';

/** The kernel's command line: its console on the first serial port, and only its warnings and errors there. */
export const GUEST_CMDLINE = 'console=ttyS0 quiet';
export const GUEST_MEMORY_BYTES = 128 * 1024 * 1024;

export interface GuestFiles {
  bios: ArrayBuffer;
  vgaBios: ArrayBuffer;
  /** A bzImage. */
  kernel: ArrayBuffer;
  initrd: ArrayBuffer;
}

export interface GuestOptions {
  files: GuestFiles;
  disk: GuestDisk;
  /** v86's v86.wasm, compiled. */
  wasm: WebAssembly.Module;
  memoryBytes?: number;
  cmdline?: string;
  /** Each piece of the serial console's output, as text. */
  onSerial?(text: string): void;
}

/** The emulator's interface this file uses (its typings take a disk only as a URL or a buffer). */
interface Emulator {
  add_listener(event: 'serial0-output-byte', listener: (byte: number) => void): void;
  serial0_send(data: string): void;
  destroy(): Promise<void>;
}

function find(text: string, pattern: string | RegExp): { index: number; length: number } | undefined {
  if (typeof pattern === 'string') {
    const index = text.indexOf(pattern);
    return index < 0 ? undefined : { index, length: pattern.length };
  }
  const m = pattern.exec(text);
  return m ? { index: m.index, length: m[0].length } : undefined;
}

/**
 * What follows the shell's echo of `command` in `text`: the echo is the
 * command's characters with line breaks where the shell wrapped it (at its
 * idea of the terminal's width), then the end of the line.
 */
function withoutEcho(text: string, command: string): string {
  let seen = 0;
  let i = 0;
  for (; i < text.length && seen < command.length; i++) if (text[i] !== '\r' && text[i] !== '\n') seen++;
  const lineEnd = text.indexOf('\n', i);
  return lineEnd < 0 ? '' : text.slice(lineEnd + 1);
}

export class GuestMachine {
  private readonly emulator: Emulator;
  private output = '';
  private readonly waiters = new Set<() => void>();
  private readonly decoder = new TextDecoder();

  constructor(options: GuestOptions) {
    const { files } = options;
    const wasm = options.wasm;
    this.emulator = new V86({
      wasm_fn: async (imports: Record<string, Record<string, WebAssembly.ImportValue>>) => (await WebAssembly.instantiate(wasm, imports)).exports,
      memory_size: options.memoryBytes ?? GUEST_MEMORY_BYTES,
      bios: { buffer: files.bios },
      vga_bios: { buffer: files.vgaBios },
      bzimage: { buffer: files.kernel },
      initrd: { buffer: files.initrd },
      cmdline: options.cmdline ?? GUEST_CMDLINE,
      hda: options.disk as unknown as { buffer: ArrayBuffer },
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
    }) as unknown as Emulator;
    this.emulator.add_listener('serial0-output-byte', (byte) => {
      const text = this.decoder.decode(Uint8Array.of(byte), { stream: true });
      if (text === '') return;
      this.output += text;
      options.onSerial?.(text);
      for (const wake of this.waiters) wake();
    });
  }

  /** Everything the serial console printed so far. */
  get transcript(): string {
    return this.output;
  }

  /** Types `text` on the serial console. */
  send(text: string): void {
    this.emulator.serial0_send(text);
  }

  /**
   * Resolves with the console's text from `from` (an offset in the
   * transcript) up to the end of the first match of `pattern` after it, and
   * where that is; rejects after `timeoutMs` saying what was printed.
   */
  waitFor(pattern: string | RegExp, from = 0, timeoutMs = 120_000): Promise<{ text: string; end: number }> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = find(this.output.slice(from), pattern);
        if (!m) return false;
        const end = from + m.index + m.length;
        done();
        resolve({ text: this.output.slice(from, end), end });
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`the guest did not print ${String(pattern)} in ${timeoutMs / 1000} s; its console from there:\n${this.output.slice(from).slice(-4000)}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
      };
      const wake = () => void check();
      if (!check()) this.waiters.add(wake);
    });
  }

  /** Types `command` and waits for the shell's next prompt; resolves with what the command printed. */
  async run(command: string, timeoutMs = 120_000): Promise<string> {
    const from = this.output.length;
    this.send(`${command}\n`);
    const { text } = await this.waitFor(`\n${GUEST_PROMPT}`, from, timeoutMs);
    return withoutEcho(text.slice(0, -GUEST_PROMPT.length), command).replace(/\r/g, '');
  }

  /** Stops the emulator and frees it. */
  async stop(): Promise<void> {
    await this.emulator.destroy();
  }
}
