#!/bin/sh
# Entry point of the werkpilot image: the first argument picks what the container runs.
#   scheduler            `werkpilot scheduler` (HTTP on PORT, 3001)
#   worker               `werkpilot worker` (metrics and /healthz on WORKER_HTTP_PORT, 3002)
#   werkpilot ARGS...    the binary with any command (e.g. `werkpilot status --url http://scheduler:3001`)
#   anything else        run as a command (e.g. `sh`)
# `exec` makes the binary the container's main process (under `init: true`, tini's only child), so
# Docker's SIGTERM reaches the role itself. The role is written to WERKPILOT_ROLE_FILE so the
# image's HEALTHCHECK knows which port to ask.
set -eu

home="${WERKPILOT_HOME:-/app}"
bin="$home/apps/cli/bin/werkpilot.js"
role_file="${WERKPILOT_ROLE_FILE:-/tmp/werkpilot-role}"
role="${1:-scheduler}"
[ "$#" -gt 0 ] && shift

case "$role" in
  scheduler|worker)
    printf '%s\n' "$role" > "$role_file"
    exec node "$bin" "$role" "$@"
    ;;
  werkpilot|cli)
    exec node "$bin" "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
