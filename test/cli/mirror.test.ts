import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pattern } from '../contract/device-contract.js';

const BIN = new URL('../../bin/diskmirror.js', import.meta.url).pathname;
let dir: string;

export function run(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskmirror-cli-'));
  if (!existsSync(new URL('../../dist/node/src/cli/main.js', import.meta.url))) {
    throw new Error('dist/node is missing: run `npm run build:node` (npm test does it first)');
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('diskmirror mirror (raw)', () => {
  it('creates the target and copies every byte', async () => {
    const src = join(dir, 'a.raw');
    const data = pattern(3 * 1024 * 1024 + 777, 5);
    data.fill(0, 100_000, 900_000);
    writeFileSync(src, data);
    const dst = join(dir, 'b.raw');
    const r = await run(['mirror', src, dst]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Buffer.compare(readFileSync(dst), Buffer.from(data))).toBe(0);
  });

  it('bad usage is one line on stderr and exit 2', async () => {
    const r = await run(['mirror', join(dir, 'only-one')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/expected SRC and DST/);
  });

  it('a missing source names the file', async () => {
    const r = await run(['mirror', join(dir, 'nope.raw'), join(dir, 'x.raw')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nope\.raw/);
    expect(r.stderr).toMatch(/ENOENT/);
  });
});
