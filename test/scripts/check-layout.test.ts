/**
 * The layout check that `npm test` runs: it fails on a file over 600 lines
 * (350 under src/ui/), on any import cycle, and on a page file that imports
 * a value from src/block, src/format, src/mirror, src/worker or src/guest.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SCRIPT = new URL('../../scripts/check-layout.mjs', import.meta.url).pathname;

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'diskmirror-layout-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(root, 'src', name, '..'), { recursive: true });
    writeFileSync(join(root, 'src', name), text);
  }
  return root;
}

const check = (root: string) => spawnSync(process.execPath, [SCRIPT, '--root', root], { encoding: 'utf8' });

describe('check-layout', () => {
  it('passes this project', () => {
    const r = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });

  it('fails on an import cycle (type imports and dynamic imports count) and names it', () => {
    const root = tree({
      'a/x.ts': "import type { Y } from '../b/y.js';\nexport type X = Y;\n",
      'b/y.ts': "export type Y = number;\nexport const load = () => import('../c/z.js');\n",
      'c/z.ts': "import { load } from '../b/y.js';\nexport const z = load;\n",
      'd/ok.ts': "import type { X } from '../a/x.js';\nexport type Ok = X;\n",
    });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/import cycle between src\/b\/y\.ts, src\/c\/z\.ts/);
      expect(r.stderr).not.toMatch(/ok\.ts/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails on a file over 600 lines', () => {
    const root = tree({ 'big.ts': 'export const a = 1;\n'.repeat(601), 'small.ts': 'export const b = 2;\n'.repeat(600) });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/src\/big\.ts has 601 lines/);
      expect(r.stderr).not.toMatch(/small\.ts/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails on a page file over 350 lines, and only under src/ui/', () => {
    const root = tree({
      'ui/big.ts': 'export const a = 1;\n'.repeat(351),
      'ui/small.ts': 'export const b = 2;\n'.repeat(350),
      'mirror/long.ts': 'export const c = 3;\n'.repeat(500),
    });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/src\/ui\/big\.ts has 351 lines \(at most 350 under src\/ui\/\)/);
      expect(r.stderr).not.toMatch(/small\.ts|long\.ts/);
      expect(r.stderr).toMatch(/1 problem\(s\)/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails on a page file that imports a value from the engine, not on a type', () => {
    const root = tree({
      'block/dev.ts': 'export class BlockError extends Error {}\nexport type Errno = string;\n',
      'format/fmt.ts': 'export const FORMATS = [];\nexport type FormatName = string;\n',
      'mirror/states.ts': 'export type JobStatus = string;\nexport const verbAllowed = () => true;\n',
      'worker/api.ts': 'export type JobProgress = number;\n',
      'qapi/vocab.ts': 'export const VERBS = [];\n',
      'ui/value.ts': "import { BlockError } from '../block/dev.js';\nexport const e = BlockError;\n",
      'ui/mixed.ts': "import {\n  type JobStatus,\n  verbAllowed,\n} from '../mirror/states.js';\nexport const v: JobStatus = String(verbAllowed);\n",
      'ui/dynamic.ts': "export const load = () => import('../format/fmt.js');\n",
      'ui/reexport.ts': "export { FORMATS } from '../format/fmt.js';\n",
      'ui/types.ts':
        "import type { Errno } from '../block/dev.js';\nimport { type FormatName } from '../format/fmt.js';\nimport { type JobStatus } from '../mirror/states.js';\nexport type { JobProgress } from '../worker/api.js';\nimport { VERBS } from '../qapi/vocab.js';\nexport type T = [Errno, FormatName, JobStatus, typeof VERBS];\n",
      'mirror/user.ts': "import { BlockError } from '../block/dev.js';\nexport const u = BlockError;\n",
    });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/src\/ui\/value\.ts imports a value from src\/block\/dev\.ts/);
      expect(r.stderr).toMatch(/src\/ui\/mixed\.ts imports a value from src\/mirror\/states\.ts/);
      expect(r.stderr).toMatch(/src\/ui\/dynamic\.ts imports a value from src\/format\/fmt\.ts/);
      expect(r.stderr).toMatch(/src\/ui\/reexport\.ts imports a value from src\/format\/fmt\.ts/);
      expect(r.stderr).not.toMatch(/types\.ts|user\.ts/);
      expect(r.stderr).toMatch(/4 problem\(s\)/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails on a page file that imports a value from src/guest (v86 belongs to the worker), not on a type', () => {
    const root = tree({
      'guest/machine.ts': 'export class GuestMachine {}\nexport type GuestFiles = string;\n',
      'ui/boot.ts': "import { GuestMachine } from '../guest/machine.js';\nexport const m = GuestMachine;\n",
      'ui/files.ts': "import type { GuestFiles } from '../guest/machine.js';\nexport type F = GuestFiles;\n",
    });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/src\/ui\/boot\.ts imports a value from src\/guest\/machine\.ts: the page takes only types from src\/guest\//);
      expect(r.stderr).not.toMatch(/files\.ts/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails on src/qapi or src/shared importing anything of the project but each other and src/util (types too)', () => {
    const root = tree({
      'util/size.ts': 'export const KiB = 1024;\n',
      'block/dev.ts': 'export class BlockError extends Error {}\n',
      'mirror/control.ts': 'export class CommandError extends Error {}\n',
      'qapi/errors.ts': "import { KiB } from '../util/size.js';\nexport class BlockError extends Error {}\nexport const k = KiB;\n",
      'qapi/engine.ts': "import type { BlockError } from '../block/dev.js';\nexport type E = BlockError;\n",
      'shared/transfer.ts': "import { BlockError } from '../qapi/errors.js';\nimport { CommandError } from '../mirror/control.js';\nexport const all = [BlockError, CommandError];\n",
    });
    try {
      const r = check(root);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/src\/qapi\/engine\.ts imports src\/block\/dev\.ts/);
      expect(r.stderr).toMatch(/src\/shared\/transfer\.ts imports src\/mirror\/control\.ts/);
      expect(r.stderr).toMatch(/2 problem\(s\)/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
