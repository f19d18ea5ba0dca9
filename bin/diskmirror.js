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
process.exitCode = await main(process.argv.slice(2));
