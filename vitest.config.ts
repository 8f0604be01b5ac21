import { defineConfig } from 'vitest/config';

// Integration tests change kernel state as root: run files one at a time.
// npm test runs vitest once per Docker engine (test/run-suites.js); the name
// labels every file of a run with the engine it ran on.
const engine = process.env.WEFT_TEST_ENGINE;
export default defineConfig({
  test: {
    ...(engine ? { name: `docker ${engine}` } : {}),
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
