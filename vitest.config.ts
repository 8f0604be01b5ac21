import { defineConfig } from 'vitest/config';

// Integration tests change kernel state as root: run files one at a time.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
