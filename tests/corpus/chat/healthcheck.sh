#!/bin/sh
# Healthy when the server serves its configuration with its settings from both env files, and
# the bridge (from the extended base service) reaches it.
set -u
fail() { echo "unhealthy: chat: $*"; exit 1; }
conf=$(docker exec chat wget -q -O - http://127.0.0.1:8008/homeserver.yaml 2>&1) || fail "$conf"
echo "$conf" | grep -q '^server_name: ' || fail "no server_name in: $conf"
who=$(docker exec chat wget -q -O - http://127.0.0.1:8008/whoami 2>&1) || fail "$who"
case $who in *" "?*) ;; *) fail "settings missing: '$who'" ;; esac
status=$(docker exec chat-bridge wget -q -O - http://127.0.0.1:29318/status 2>&1) || fail "bridge: $status"
docker exec chat-bridge wget -q -O /dev/null http://chat:8008/whoami || fail "the bridge cannot reach chat"
echo "healthy: chat"
