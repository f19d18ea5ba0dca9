/** A progress line on a terminal, as qemu-img -p draws it: "    (42.17/100%)". */
export class ProgressLine {
  private last = -1;

  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(done: number, total: number): void {
    const percent = total > 0 ? (done / total) * 100 : 0;
    const rounded = Math.floor(percent * 100) / 100;
    if (rounded === this.last) return;
    this.last = rounded;
    this.stream.write(`    (${rounded.toFixed(2)}/100%)\r`);
  }

  /** Erases the line (before printing a message). */
  clear(): void {
    if (this.last < 0) return;
    this.stream.write('\r\x1b[2K');
    this.last = -1;
  }

  finish(): void {
    if (this.last < 0) return;
    this.stream.write('    (100.00/100%)\n');
    this.last = -1;
  }
}
