import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/contract/**/*.test.ts', 'test/format/**/*.test.ts', 'test/mirror/**/*.test.ts', 'test/cli/**/*.test.ts', 'test/lessons/**/*.test.ts', 'test/properties/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
