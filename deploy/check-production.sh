#!/bin/sh
# Fails when the node_modules of the workspace in the current directory hold a development package:
# the check deploy/install-production.sh runs before anything ships. It looks at every package pnpm
# placed (node_modules/.pnpm holds them all, hoisted or not), not just the top level.
set -eu

dev_packages='typescript vitest @vitest vite rollup @rollup chai playwright-core testcontainers @types'
found=''
for name in $dev_packages; do
  # pnpm names its entries <name>@<version>[_peers]; a scope's slash becomes +.
  pattern=$(printf '%s' "$name" | sed 's#/#+#')
  if ls node_modules/.pnpm 2>/dev/null | grep -Eq "^${pattern}(@|\+)"; then found="$found $name"; fi
done
if [ -n "$found" ]; then
  echo "check-production: development packages were installed:$found; only production dependencies belong in the image" >&2
  exit 1
fi
