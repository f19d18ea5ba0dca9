// npm start: builds the app (unless --no-build) and serves it on
// http://localhost:4173 (PORT overrides), printing the URL.
import { build, preview } from 'vite';
import { fileURLToPath } from 'node:url';

const configFile = fileURLToPath(new URL('../vite.config.ts', import.meta.url));
const port = Number(process.env.PORT ?? 4173);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`PORT=${process.env.PORT}: not a TCP port number`);
  process.exit(2);
}
if (!process.argv.includes('--no-build')) {
  await build({ configFile, logLevel: 'warn' });
}
try {
  await preview({ configFile, logLevel: 'warn', preview: { port, strictPort: true, host: 'localhost' } });
} catch (err) {
  console.error(`Could not serve on port ${port}: ${err.message}`);
  process.exit(1);
}
console.log(`diskmirror is running at http://localhost:${port}/ (Ctrl+C to stop)`);
