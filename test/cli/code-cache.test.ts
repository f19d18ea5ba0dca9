/**
 * The command's code cache (made at build time) is one V8 takes: a cache it
 * refused would be ignored silently, and every run would compile the bundle
 * again.
 */
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { requireBuiltCommand } from '../helpers/require-program.js';

describe('the code cache of the built command', () => {
  it('is accepted by this Node for the bundle as bin/diskmirror.js wraps it', () => {
    requireBuiltCommand();
    const bundle = new URL('../../dist/cli/diskmirror.cjs', import.meta.url);
    const cachedData = readFileSync(new URL('../../dist/cli/diskmirror.cache', import.meta.url));
    expect(cachedData.byteLength).toBeGreaterThan(10_000);
    const bin = readFileSync(new URL('../../bin/diskmirror.js', import.meta.url), 'utf8');
    expect(bin).toContain('`(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, \'utf8\')}\\n})`');
    const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'utf8')}\n})`, {
      filename: bundle.pathname,
      cachedData,
    });
    expect(script.cachedDataRejected).toBe(false);
  });
});
