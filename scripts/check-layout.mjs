#!/usr/bin/env node
// The house's layout, checked on every `npm test`: no source file over 600
// lines (a room that grows past that is split by concern; a page file, under
// src/ui/, over 350: the page is small components), no import cycle between
// source files (type imports and dynamic imports count: a cycle is a knot
// for a reader whatever the compiler makes of it), and no page file that
// imports a value from the engine's folders (src/block, src/format,
// src/mirror, src/worker, src/guest: v86 runs in the worker, never in the
// page's bundle): the page depends on the vocabulary (src/qapi,
// src/shared) and on the worker's API type only. The vocabulary itself is
// the bottom layer both sides stand on: src/qapi and src/shared import
// nothing of the project but each other and src/util (types included).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project, or the tree named by --root (the checker's own test uses that).
const rootArg = process.argv.indexOf('--root');
const root = rootArg > 0 ? resolve(process.argv[rootArg + 1]) : resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MAX_LINES = 600;
const MAX_UI_LINES = 350;
const UI = join(root, 'src', 'ui');
/** Folders the page may import types from, never values. */
const ENGINE = ['block', 'format', 'mirror', 'worker', 'guest'].map((d) => join(root, 'src', d));
const inside = (dir, file) => file.startsWith(dir + '/');
/** The vocabulary, and what it may import. */
const VOCABULARY = ['qapi', 'shared'].map((d) => join(root, 'src', d));
const BELOW_VOCABULARY = [...VOCABULARY, join(root, 'src', 'util')];

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
  const max = inside(UI, file) ? MAX_UI_LINES : MAX_LINES;
  if (lines > max) problems.push(`${relative(root, file)} has ${lines} lines (at most ${max}${max === MAX_UI_LINES ? ' under src/ui/' : ''}): split it by concern`);
}

// A page file's imports that bring a value: not `import type`/`export type`,
// and not a list whose every name is marked `type`. Dynamic and bare imports bring values.
const VALUE_IMPORT = /(?:^|[\s;])(import|export)\s+(type\s)?([^'"]*?)\sfrom\s*['"](\.[^'"]+)['"]|import\s*\(\s*['"](\.[^'"]+)['"]\s*\)|^import\s*['"](\.[^'"]+)['"]/gm;
function bringsValue(typeKeyword, clause) {
  if (typeKeyword) return false;
  const list = /^\{([^}]*)\}$/.exec(clause.trim());
  if (!list) return true; // a default or namespace import is a value
  const names = list[1].split(',').map((n) => n.trim()).filter(Boolean);
  return names.length === 0 || names.some((n) => !/^type\s/.test(n));
}
for (const file of files.filter((f) => inside(UI, f))) {
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(VALUE_IMPORT)) {
    const spec = m[4] ?? m[5] ?? m[6];
    if (m[4] !== undefined && !bringsValue(m[2], m[3])) continue;
    const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
    const engine = ENGINE.find((dir) => inside(dir, target));
    if (engine) problems.push(`${relative(root, file)} imports a value from ${relative(root, target)}: the page takes only types from src/${relative(join(root, 'src'), engine)}/ (values come from src/qapi/ or src/shared/)`);
  }
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

for (const file of files.filter((f) => VOCABULARY.some((dir) => inside(dir, f)))) {
  for (const target of edges.get(file)) {
    if (!BELOW_VOCABULARY.some((dir) => inside(dir, target))) {
      problems.push(`${relative(root, file)} imports ${relative(root, target)}: src/qapi/ and src/shared/ import only each other and src/util/ (both sides stand on them)`);
    }
  }
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
console.log(`check-layout: ${files.length} source files, none over ${MAX_LINES} lines (${MAX_UI_LINES} under src/ui/), no import cycle, no engine value imported by the page, the vocabulary below the rest`);
