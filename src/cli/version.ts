/** diskmirror's version, for --version and the QMP greeting. */
import { readFileSync } from 'node:fs';

/** The version in the project's package.json, found by walking up from this module (bundled or not). */
export function version(): string {
  for (let dir = new URL('./', import.meta.url); ; dir = new URL('../', dir)) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'diskmirror') return pkg.version;
    } catch {
      // not here: one level up
    }
    if (dir.pathname === '/') return 'unknown';
  }
}
