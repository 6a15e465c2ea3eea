import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'console/src/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Two test files at a time at least. Most e2e files spend their time in child processes
    // (control planes, agents, CLI runs): vitest's default (cores - 1) ran them one at a time on
    // a 2-core machine. VITEST_MAX_WORKERS still overrides this.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
