/**
 * The soak's images, made and read with QEMU's tools: a raw image, or a
 * qcow2 overlay over a qcow2 backing file (each with its own cluster size),
 * with random data in a few places; what `qemu-img map` says of an image;
 * whether `qemu-img check` finds it clean, leaking or corrupt; and, when a
 * target differs from its source, what both hold around the difference.
 */
import { execFileSync } from 'node:child_process';
import type { MapExtent } from '../src/format/map.js';

const KiB = 1024;

export function sh(program: string, args: string[]): string {
  return execFileSync(program, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** What `qemu-img map --output=json` says of an image (depth 0: the image itself holds it). */
export function readMap(image: string): MapExtent[] {
  return JSON.parse(sh('qemu-img', ['map', '--output=json', image])) as MapExtent[];
}

/** The extents that touch [offset, offset + bytes), one line each. */
export function describeMap(image: string, offset: number, bytes: number): string {
  let map: MapExtent[];
  try {
    map = readMap(image);
  } catch (err) {
    return `  (qemu-img map failed: ${(err as { stderr?: string }).stderr ?? err})`;
  }
  return map
    .filter((e) => e.start < offset + bytes && e.start + e.length > offset)
    .map((e) => `  ${JSON.stringify(e)}`)
    .join('\n');
}

export interface ImageSpec {
  kind: 'qcow2-backing' | 'raw';
  /** Virtual size in bytes. */
  size: number;
  /** qcow2: the overlay's clusters and the backing file's. */
  clusterBytes: number;
  backingClusterBytes: number;
}

/**
 * Makes `src` (and, for qcow2, `base` under it): `writes` random writes of
 * 4 KiB to 256 KiB at 512-byte offsets into each image, drawn from `rand`.
 */
export function makeSource(spec: ImageSpec, paths: { src: string; base: string }, rand: () => number): void {
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const fill = (image: string, fmt: string, count: number) => {
    const cmds: string[] = [];
    for (let i = 0; i < count; i++) {
      const bytes = int(1, 64) * 4 * KiB;
      const offset = Math.floor(rand() * ((spec.size - bytes) / 512)) * 512;
      cmds.push('-c', `write -P ${int(1, 255)} ${offset} ${bytes}`);
    }
    sh('qemu-io', ['-f', fmt, ...cmds, image]);
  };
  if (spec.kind === 'raw') {
    sh('qemu-img', ['create', '-q', '-f', 'raw', paths.src, String(spec.size)]);
    fill(paths.src, 'raw', 40);
    return;
  }
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${spec.backingClusterBytes}`, paths.base, String(spec.size)]);
  fill(paths.base, 'qcow2', 30);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${spec.clusterBytes}`, '-b', paths.base, '-F', 'qcow2', paths.src]);
  fill(paths.src, 'qcow2', 20);
}

export type CheckResult = { state: 'clean' } | { state: 'leaks' | 'corrupt' | 'failed'; output: string };

/** `qemu-img check` as its exit code says: 0 clean, 3 leaked clusters only, 2 corrupt, anything else failed. */
export function checkImage(image: string): CheckResult {
  try {
    sh('qemu-img', ['check', image]);
    return { state: 'clean' };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    const output = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().replace(/\n+/g, ' | ');
    return { state: e.status === 3 ? 'leaks' : e.status === 2 ? 'corrupt' : 'failed', output };
  }
}

/** `qemu-img compare`: null when identical, else what it said (and the first differing offset, when it names one). */
export function compareImages(src: string, dst: string): { said: string; offset: number | null } | null {
  try {
    sh('qemu-img', ['compare', src, dst]);
    return null;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    const said = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim();
    const m = /mismatch at offset (\d+)/i.exec(said);
    return { said, offset: m ? Number(m[1]) : null };
  }
}
