import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

/**
 * Builds the compiled binaries before any test runs: the end-to-end tests start
 * `node_modules/.bin/werkpilot` (plain node on apps/cli/dist), as production does. `tsc -b` is
 * incremental, so this costs about half a second when nothing changed, and a test run after an edit
 * never starts a stale binary.
 */
export default function buildBinaries(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '-b', 'tsconfig.build.json'], { cwd: import.meta.dirname, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`pnpm build failed, so the binaries the tests start are missing or stale:\n${result.stdout}${result.stderr}`);
}
