#!/usr/bin/env node
// The diskmirror command. Its code is compiled and bundled into one script
// (dist/cli/diskmirror.cjs) by `npm install` (or `npm run build:node`), with
// V8's code cache for it beside it (dist/cli/diskmirror.cache): compiled
// once at build time, so a run does not compile 400 KB of JavaScript again.
// A cache V8 refuses (another Node) is ignored and the script compiles as
// usual; one is never written here at run time.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const bundle = fileURLToPath(new URL('../dist/cli/diskmirror.cjs', import.meta.url));
const cacheFile = fileURLToPath(new URL('../dist/cli/diskmirror.cache', import.meta.url));
if (!existsSync(bundle)) {
  console.error('diskmirror: not built yet; run `npm install` (or `npm run build`) in the project first');
  process.exit(2);
}
let cachedData;
try {
  cachedData = readFileSync(cacheFile);
} catch {
  // No cache: compile as usual.
}
const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'utf8')}\n})`, {
  filename: bundle,
  cachedData,
  importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
});
const mod = { exports: {} };
script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
const code = await mod.exports.main(process.argv.slice(2));
// The build makes the cache after a representative run (scripts/code-cache.mjs),
// so the functions that run compiled lazily are in it too.
if (process.env.DISKMIRROR_MAKE_CODE_CACHE === cacheFile) writeFileSync(cacheFile, script.createCachedData());
// Exit once what was written has left: a job interrupted mid-flight may still
// hold timers, and piped stdout is asynchronous.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
