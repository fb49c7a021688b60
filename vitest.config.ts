import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Most test time waits on child processes (qemu, cryptsetup, servers), so two files at a time even on two
    // cores: the suite takes about 60% of its one-at-a-time wall time there (vitest's default is cores - 1).
    maxWorkers: Math.max(2, availableParallelism() - 1),
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
