import { defineConfig } from '@playwright/test';
import { existsSync } from 'node:fs';

/** Debian's Chromium; the browser suite never downloads a browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  throw new Error(
    `Chromium was not found at ${CHROMIUM}. The browser tests use the system's Chromium:\n` +
      `  sudo apt-get update && sudo apt-get install -y chromium\n` +
      `or point CHROMIUM_PATH at a Chromium binary.`,
  );
}

const APP_PORT = Number(process.env.E2E_APP_PORT ?? 4183);
const HARNESS_PORT = Number(process.env.E2E_HARNESS_PORT ?? 4184);

export default defineConfig({
  testDir: 'test/e2e',
  timeout: 120_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    baseURL: `http://localhost:${APP_PORT}/`,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
  webServer: [
    {
      // The built app, as `npm start` serves it.
      command: `node scripts/serve.mjs`,
      env: { PORT: String(APP_PORT) },
      url: `http://localhost:${APP_PORT}/`,
      reuseExistingServer: false,
      timeout: 120_000,
    },
    {
      // Test pages (the OPFS device contract), served from source.
      command: `npx vite --config test/e2e/harness/vite.config.ts --port ${HARNESS_PORT} --strictPort`,
      url: `http://localhost:${HARNESS_PORT}/`,
      reuseExistingServer: false,
      timeout: 120_000,
    },
  ],
  metadata: { harness: `http://localhost:${HARNESS_PORT}/` },
});
