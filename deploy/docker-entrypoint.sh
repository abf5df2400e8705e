#!/bin/sh
# Entry point of the werkpilot image: the first argument picks what the container runs.
#   scheduler            the scheduler (HTTP on PORT, 3001)
#   worker               a worker (metrics and /healthz on WORKER_HTTP_PORT, 3002)
#   werkpilot ARGS...    the CLI (e.g. `werkpilot status --url http://scheduler:3001`)
#   anything else        run as a command (e.g. `sh`)
# The role is written to WERKPILOT_ROLE_FILE so the image's HEALTHCHECK knows which port to ask.
set -eu

home="${WERKPILOT_HOME:-/app}"
role_file="${WERKPILOT_ROLE_FILE:-/tmp/werkpilot-role}"
role="${1:-scheduler}"
[ "$#" -gt 0 ] && shift

case "$role" in
  scheduler|worker)
    printf '%s\n' "$role" > "$role_file"
    # tsx is a dependency of each app, so `--import tsx` resolves from the app's directory.
    cd "$home/apps/$role"
    exec node --import tsx src/main.ts "$@"
    ;;
  werkpilot|cli)
    exec node "$home/apps/cli/bin/werkpilot.js" "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
