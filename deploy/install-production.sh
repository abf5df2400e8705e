#!/bin/sh
# Installs the production dependencies of the apps and the demo agents into the workspace in the
# current directory: what the image ships. The Dockerfile runs it in its deps stage, and
# deploy/test/image-install.test.ts runs it on a copy of the workspace to prove the result starts.
# Extra arguments go to `pnpm install` (the Dockerfile passes its store dir).
#
# The filters leave out the test helpers and the benchmarks (they depend on vitest). Afterwards
# @werkpilot/shared is linked into the root node_modules, so agent modules mounted anywhere under
# the workspace (e.g. /app/agents) can import it; pnpm only links it into packages that declare it.
set -eu

pnpm install --offline --prod --frozen-lockfile \
  --filter '@werkpilot/scheduler...' --filter '@werkpilot/worker...' \
  --filter '@werkpilot/cli...' --filter '@werkpilot/examples...' \
  "$@"

# tsx runs the TypeScript sources, so it must be a production dependency of every app.
for app in scheduler worker cli; do
  if [ ! -d "apps/$app/node_modules/tsx" ]; then
    echo "install-production: apps/$app has no tsx among its production dependencies" >&2
    exit 1
  fi
done
# Development tools must not ship.
for tool in typescript vitest; do
  if [ -e "node_modules/$tool" ] || [ -e "packages/test-support/node_modules/$tool" ]; then
    echo "install-production: $tool was installed; only production dependencies belong in the image" >&2
    exit 1
  fi
done

mkdir -p node_modules/@werkpilot
ln -sfn ../../packages/shared node_modules/@werkpilot/shared
