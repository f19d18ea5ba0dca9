/**
 * qemu-img and qemu-io, the oracle: run them, make images with them, and
 * compare what they say with what diskmirror says.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MapExtent } from '../../src/format/map.js';
import { requireProgram } from './require-program.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program; never throws for a non-zero exit. */
export function run(program: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(program, args, { maxBuffer: 256 << 20, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs qemu-img; throws with its stderr on failure. */
export async function qemuImg(...args: string[]): Promise<string> {
  const r = await run('qemu-img', args);
  if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Runs qemu-io with one -c per command; throws on failure or when a command reports an error. */
export async function qemuIo(image: string, commands: string[], options: string[] = []): Promise<string> {
  const args = [...options, ...commands.flatMap((c) => ['-c', c]), image];
  const r = await run('qemu-io', args);
  if (r.code !== 0 || /error|failed/i.test(r.stdout + r.stderr)) {
    throw new Error(`qemu-io ${args.join(' ')} failed (${r.code}): ${(r.stderr + r.stdout).trim().slice(0, 500)}`);
  }
  return r.stdout;
}

/** Fails a suite that needs the oracle (qemu-img and qemu-io), saying how to get it. */
export function requireQemu(): void {
  requireProgram('qemu-img', 'the oracle these tests compare with');
  requireProgram('qemu-io', 'the oracle these tests compare with');
}

export function tempDir(prefix = 'diskmirror-'): { path: string; file(name: string): string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, file: (name) => join(path, name), remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** qemu-img map's JSON extents have the fields diskmirror's map prints. */
export type QemuMapEntry = MapExtent;

export async function qemuMap(image: string): Promise<QemuMapEntry[]> {
  return JSON.parse(await qemuImg('map', '--output=json', image)) as QemuMapEntry[];
}

export interface QemuCheck {
  code: number;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  stderr: string;
}

/** qemu-img check --output=json: exit code and counts. */
export async function qemuCheck(image: string, extra: string[] = []): Promise<QemuCheck> {
  const r = await run('qemu-img', ['check', '--output=json', ...extra, image]);
  let parsed: Record<string, number> = {};
  try {
    parsed = JSON.parse(r.stdout) as Record<string, number>;
  } catch {
    // no JSON when the image cannot be opened
  }
  return {
    code: r.code,
    corruptions: parsed.corruptions ?? 0,
    leaks: parsed.leaks ?? 0,
    checkErrors: parsed['check-errors'] ?? 0,
    stderr: r.stderr,
  };
}

/** qemu-img compare: 0 identical, 1 different, 2 error. */
export async function qemuCompare(a: string, b: string, strict = false): Promise<RunResult> {
  return run('qemu-img', ['compare', ...(strict ? ['-s'] : []), a, b]);
}

/** Ranges as "data at depth d" or "zero", merged: the part of a map both tools must agree on. */
export interface NormalRange {
  start: number;
  length: number;
  kind: string;
}

export function normalizeRanges(entries: Array<{ start: number; length: number; data: boolean; depth: number }>): NormalRange[] {
  const out: NormalRange[] = [];
  for (const e of entries) {
    const kind = e.data ? `data@${e.depth}` : 'zero';
    const last = out[out.length - 1];
    if (last && last.kind === kind && last.start + last.length === e.start) last.length += e.length;
    else out.push({ start: e.start, length: e.length, kind });
  }
  return out;
}
