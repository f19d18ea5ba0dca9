#!/usr/bin/env node
// The house's layout, checked on every `npm test`: no source file over 600
// lines (a room that grows past that is split by concern), and no import
// cycle between source files (type imports and dynamic imports count: a
// cycle is a knot for a reader whatever the compiler makes of it).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project, or the tree named by --root (the checker's own test uses that).
const rootArg = process.argv.indexOf('--root');
const root = rootArg > 0 ? resolve(process.argv[rootArg + 1]) : resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MAX_LINES = 600;

function sources(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sources(path));
    else if (/\.ts$/.test(name) && !/\.d\.ts$/.test(name)) out.push(path);
  }
  return out;
}

const files = sources(join(root, 'src'));
const problems = [];

for (const file of files) {
  const lines = readFileSync(file, 'utf8').split('\n').length - 1;
  if (lines > MAX_LINES) problems.push(`${relative(root, file)} has ${lines} lines (at most ${MAX_LINES}): split it by concern`);
}

// Every relative import, static or dynamic, as the file it names.
const IMPORT = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"](\.[^'"]+)['"]|import\s*\(\s*['"](\.[^'"]+)['"]\s*\)|^import\s*['"](\.[^'"]+)['"]/gm;
const edges = new Map();
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const targets = new Set();
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
    if (files.includes(target)) targets.add(target);
  }
  edges.set(file, [...targets]);
}

// Tarjan's strongly connected components: any with more than one file, or a file importing itself, is a cycle.
let index = 0;
const stack = [];
const onStack = new Set();
const indexOf = new Map();
const low = new Map();
function visit(v) {
  indexOf.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  onStack.add(v);
  for (const w of edges.get(v)) {
    if (!indexOf.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) {
      low.set(v, Math.min(low.get(v), indexOf.get(w)));
    }
  }
  if (low.get(v) === indexOf.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || edges.get(v).includes(v)) {
      const names = component.map((f) => relative(root, f)).sort();
      const ties = component.flatMap((a) => edges.get(a).filter((b) => component.includes(b)).map((b) => `${relative(root, a)} -> ${relative(root, b)}`));
      problems.push(`import cycle between ${names.join(', ')}:\n    ${ties.join('\n    ')}`);
    }
  }
}
for (const file of files) if (!indexOf.has(file)) visit(file);

if (problems.length > 0) {
  console.error(`check-layout: ${problems.length} problem(s)\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
console.log(`check-layout: ${files.length} source files, none over ${MAX_LINES} lines, no import cycle`);
