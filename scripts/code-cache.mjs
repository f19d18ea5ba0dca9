// Makes V8's code cache for the bundled command (dist/cli/diskmirror.cache):
// runs bin/diskmirror.js once on a small copy (raw with data and zeroes to
// qcow2, then `info`), so the cache holds the functions a run compiles, not
// only the top level. Part of `npm run build:node`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../bin/diskmirror.js', import.meta.url));
const cache = fileURLToPath(new URL('../dist/cli/diskmirror.cache', import.meta.url));
rmSync(cache, { force: true });
const dir = mkdtempSync(join(tmpdir(), 'diskmirror-code-cache-'));
try {
  const data = new Uint8Array(4 << 20);
  for (let i = 0; i < data.length; i += 7) data[i] = i & 0xff;
  data.fill(0, 1 << 20, 2 << 20);
  writeFileSync(join(dir, 'a.raw'), data);
  const run = (args) =>
    execFileSync(process.execPath, [bin, ...args], { stdio: 'ignore', env: { ...process.env, DISKMIRROR_MAKE_CODE_CACHE: cache } });
  run(['info', join(dir, 'a.raw')]);
  run(['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'a.raw'), join(dir, 'b.qcow2')]);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
