#!/usr/bin/env node
// The `werkpilot` binary: the compiled CLI and process roles (apps/cli/dist, built by `pnpm build`,
// which `pnpm install` runs). Plain node, no loader: this process is the one a supervisor signals.
try {
  await import('../dist/main.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/apps/cli/dist/main.js')) {
    process.stderr.write('werkpilot: not built yet; run `pnpm build` (or `pnpm install`) in the repository first\n');
    process.exit(1);
  }
  throw err;
}
