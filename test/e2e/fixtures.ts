/**
 * Playwright fixtures: Debian's Chromium, headless, in a persistent context
 * with its own profile directory (OPFS in an incognito-like context lives in
 * memory and is slow).
 */
import { test as base, chromium, type BrowserContext, type Page } from '@playwright/test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROMIUM } from '../../playwright.config.js';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

export const test = base.extend<{ context: BrowserContext; page: Page; harnessURL: string }>({
  // eslint-disable-next-line no-empty-pattern
  context: async ({}, use, testInfo) => {
    const profile = mkdtempSync(join(tmpdir(), 'diskmirror-profile-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      baseURL: testInfo.project.use.baseURL,
    });
    try {
      await use(context);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  },
  page: async ({ context }, use) => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
    await use(page);
  },
  // eslint-disable-next-line no-empty-pattern
  harnessURL: async ({}, use, testInfo) => {
    await use(String(testInfo.config.metadata.harness));
  },
});

export { expect } from '@playwright/test';
