#!/usr/bin/env node
// The diskmirror command. Its code is compiled and bundled into one module
// (dist/cli/diskmirror.mjs, one file loads faster) by `npm install` (or
// `npm run build:node`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/diskmirror.mjs', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error('diskmirror: not built yet; run `npm install` (or `npm run build`) in the project first');
  process.exit(2);
}
const { main } = await import(entry.href);
const code = await main(process.argv.slice(2));
// Exit once what was written has left: a job interrupted mid-flight may still
// hold timers, and piped stdout is asynchronous.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
