import { defineConfig, build as viteBuild, type Plugin } from 'vite';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = fileURLToPath(new URL('./src/ui', import.meta.url));
const publicDir = fileURLToPath(new URL('./public', import.meta.url));
const outDir = fileURLToPath(new URL('./dist/app', import.meta.url));

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? listFiles(path) : [path];
  });
}

/**
 * Builds the service worker after the app: it precaches every file of the
 * build (the app shell works offline), versioned by their names.
 */
function serviceWorker(): Plugin {
  return {
    name: 'diskmirror-service-worker',
    apply: 'build',
    async closeBundle() {
      const files = listFiles(outDir)
        .map((f) => relative(outDir, f).split('\\').join('/'))
        .filter((f) => !f.endsWith('.map') && f !== 'sw.js');
      const precache = ['./', ...files.filter((f) => f !== 'index.html').map((f) => `./${f}`)];
      const version = createHash('sha256').update(files.sort().join('\n')).digest('hex').slice(0, 12);
      await viteBuild({
        configFile: false,
        logLevel: 'warn',
        define: { PRECACHE: JSON.stringify(precache), VERSION: JSON.stringify(version) },
        build: {
          outDir,
          emptyOutDir: false,
          copyPublicDir: false,
          target: 'es2022',
          lib: { entry: join(root, 'sw.ts'), formats: ['es'], fileName: () => 'sw.js' },
        },
      });
    },
  };
}

export default defineConfig({
  root,
  base: './',
  publicDir,
  plugins: [serviceWorker()],
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
  },
  worker: {
    format: 'es',
  },
  preview: {
    port: Number(process.env.PORT ?? 4173),
    strictPort: true,
  },
});
