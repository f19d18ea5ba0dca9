import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

// Serves test pages from source, with the project root reachable for imports.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  server: { fs: { allow: [fileURLToPath(new URL('../../..', import.meta.url))] } },
  worker: { format: 'es' },
  logLevel: 'warn',
  clearScreen: false,
});
