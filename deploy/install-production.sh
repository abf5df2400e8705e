#!/bin/sh
# Installs the production dependencies of the apps and the demo agents into the workspace in the
# current directory: what the image ships. The Dockerfile runs it in its deps stage, and
# deploy/test/image-install.test.ts runs it on a copy of the workspace to prove the result starts.
# Extra arguments go to `pnpm install` (the Dockerfile passes its store dir).
#
# The filters leave out the test helpers and the benchmarks. No lifecycle scripts: the compiled
# JavaScript (apps/*/dist, packages/shared/dist) comes from the Dockerfile's build stage, and no
# production dependency needs a build step (esbuild and msgpackr-extract ship prebuilt binaries).
# Afterwards @werkpilot/shared is linked into the root node_modules, so agent modules mounted
# anywhere under the workspace (e.g. /app/agents) can import it; pnpm only links it into packages
# that declare it.
set -eu

pnpm install --offline --prod --frozen-lockfile --ignore-scripts \
  --filter '@werkpilot/cli...' --filter '@werkpilot/examples...' \
  "$@"

sh "$(dirname "$0")/check-production.sh"

mkdir -p node_modules/@werkpilot
ln -sfn ../../packages/shared node_modules/@werkpilot/shared
