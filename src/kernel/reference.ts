/**
 * A plain-TypeScript dirty bitmap with the kernel's semantics, one byte per
 * chunk and linear scans: obviously right and slow. Differential tests run
 * the same seeded operations on it and on the wasm bitmap.
 */
import type { DirtyRun } from './kernel.js';

export class ReferenceBitmap {
  private readonly bits: Uint8Array;
  private dirty = 0;

  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
  }

  get count(): number {
    return this.dirty;
  }

  get(chunk: number): boolean {
    return chunk < this.size && this.bits[chunk] === 1;
  }

  set(start: number, length: number): void {
    const end = Math.min(start + length, this.size);
    for (let i = start; i < end; i++) {
      if (this.bits[i] === 0) this.dirty++;
      this.bits[i] = 1;
    }
  }

  reset(start: number, length: number): void {
    const end = Math.min(start + length, this.size);
    for (let i = start; i < end; i++) {
      if (this.bits[i] === 1) this.dirty--;
      this.bits[i] = 0;
    }
  }

  nextDirty(from: number): number {
    for (let i = from; i < this.size; i++) if (this.bits[i] === 1) return i;
    return -1;
  }

  nextClean(from: number): number {
    for (let i = from; i < this.size; i++) if (this.bits[i] === 0) return i;
    return -1;
  }

  nextDirtyRun(from: number, maxLength: number): DirtyRun | null {
    const start = this.nextDirty(from);
    if (start < 0 || maxLength < 1) return null;
    let length = 0;
    while (start + length < this.size && length < maxLength && this.bits[start + length] === 1) length++;
    return { start, length };
  }

  countRange(start: number, length: number): number {
    let n = 0;
    const end = Math.min(start + length, this.size);
    for (let i = start; i < end; i++) n += this.bits[i]!;
    return n;
  }

  merge(other: ReferenceBitmap): void {
    for (let i = 0; i < this.size; i++) if (other.bits[i] === 1) this.set(i, 1);
  }

  clear(): void {
    this.bits.fill(0);
    this.dirty = 0;
  }
}
