#!/bin/sh
# Healthy when Docker reports both containers healthy (their own healthchecks) and the wiki
# serves its configuration.
set -u
fail() { echo "unhealthy: wiki: $*"; exit 1; }
for c in wiki wiki-search; do
    h=$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>&1) || fail "$c: $h"
    [ "$h" = healthy ] || fail "$c is $h"
done
conf=$(docker exec wiki wget -q -O - http://127.0.0.1:3000/config.yml 2>&1) || fail "$conf"
echo "$conf" | grep -q '^title: ' || fail "no title in the configuration"
echo "healthy: wiki"
