/** The layout check that `npm test` runs: it fails on a file over 600 lines and on any import cycle. */
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
});
