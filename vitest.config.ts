import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests import the workspace packages' TypeScript sources (the `@werkpilot/source` export
  // condition), not their compiled dist/, so a test sees an edit without a build. The rest are
  // Vite's default server conditions, which a list given here replaces — less `module`: it picks a
  // package's bundler-only build, which Node then loads as is (@opentelemetry/api's
  // build/esm imports files without their extensions, which Node cannot resolve).
  ssr: { resolve: { conditions: ['@werkpilot/source', 'node', 'development|production'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'examples/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'bench/test/**/*.test.ts', 'deploy/test/**/*.test.ts'],
    globalSetup: ['vitest.build-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
