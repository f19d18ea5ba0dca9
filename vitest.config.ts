import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/contract/**/*.test.ts', 'test/format/**/*.test.ts', 'test/mirror/**/*.test.ts', 'test/cli/**/*.test.ts', 'test/lessons/**/*.test.ts', 'test/properties/**/*.test.ts', 'test/ui/**/*.test.ts'],
    // The suites wait on qemu-img, child processes and timers more than on the CPU: two at a time even on two cores.
    maxWorkers: Math.max(2, availableParallelism()),
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
