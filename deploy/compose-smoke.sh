#!/bin/sh
# End-to-end smoke test of the compose stack, for machines WITH a Docker engine (the CI machines of
# this project have none; there the stack is checked by deploy/test/*.test.ts instead).
#
#   sh deploy/compose-smoke.sh            # builds, starts, checks, tears down (volumes included)
#   KEEP=1 sh deploy/compose-smoke.sh     # leaves the stack running
#
# Checks: the scheduler answers /readyz; the CLI sees 3 live workers after --scale worker=3;
# Prometheus scrapes the scheduler and all 3 workers (dns_sd); Grafana serves the provisioned
# dashboard to an anonymous viewer; Prometheus refuses its lifecycle API and Grafana refuses
# admin/admin.
set -eu
cd "$(dirname "$0")/.."

project="werkpilot-smoke-$$"
export DASHBOARD_TOKEN="smoke-$$"
export SCHEDULER_PORT="${SCHEDULER_PORT:-13001}" PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}" GRAFANA_PORT="${GRAFANA_PORT:-13000}"
compose() { docker compose -p "$project" "$@"; }
cleanup() { [ "${KEEP:-}" = 1 ] || compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

# wait_for <what> <command...>: retries for up to 120 s.
wait_for() {
  what="$1"; shift
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then echo "smoke: timed out waiting for $what" >&2; compose logs --tail 50 >&2; exit 1; fi
    sleep 2
  done
  echo "smoke: ok: $what"
}

compose up -d --build --scale worker=3
wait_for "scheduler ready on :$SCHEDULER_PORT" curl -fsS "http://127.0.0.1:$SCHEDULER_PORT/readyz"
wait_for "3 live workers (werkpilot status)" sh -c \
  "docker compose -p $project run --rm -T cli status --json | grep -Eq '\"live\": 3'"
wait_for "Prometheus scraping 1 scheduler and 3 workers" sh -c \
  "curl -fsS 'http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query?query=count(up%7Bjob%3D~%22werkpilot-.*%22%7D%3D%3D1)' | grep -q '\"4\"'"
wait_for "Grafana serving the Werkpilot dashboard anonymously" \
  curl -fsS "http://127.0.0.1:$GRAFANA_PORT/api/dashboards/uid/werkpilot-overview"
wait_for "Prometheus refusing /-/quit (no lifecycle API)" sh -c \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:$PROMETHEUS_PORT/-/quit)\" = 403 ]"
wait_for "Grafana refusing admin/admin" sh -c \
  "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -u admin:admin http://127.0.0.1:$GRAFANA_PORT/api/admin/stats)\" = 401 ]"
echo "smoke: all checks passed"
