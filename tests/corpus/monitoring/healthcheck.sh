#!/bin/sh
# Healthy when the collector runs and every target of its configuration is up.
set -u
fail() { echo "unhealthy: monitoring: $*"; exit 1; }
conf=$(docker exec monitoring cat /etc/monitoring/targets.conf 2>&1) || fail "no configuration: $conf"
targets=$(docker exec monitoring cat /tsdb/targets 2>&1) || fail "no scrape yet: $targets"
jobs=$(echo "$conf" | grep -v '^#' | while read -r job _; do [ -n "$job" ] && echo "$job"; done)
[ -n "$jobs" ] || fail "no targets configured"
for job in $jobs; do
    echo "$targets" | grep -qx "$job up" || fail "target $job is not up: $targets"
done
echo "healthy: monitoring"
