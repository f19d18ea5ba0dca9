#!/usr/bin/env node
// The diskmirror command. The code is compiled to dist/node by `npm install`
// (or `npm run build:node`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/node/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error('diskmirror: not built yet; run `npm install` (or `npm run build`) in the project first');
  process.exit(2);
}
const { main } = await import(entry.href);
const code = await main(process.argv.slice(2));
// Exit once what was written has left: a job interrupted mid-flight may still
// hold timers, and piped stdout is asynchronous.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
