#!/bin/sh
# Healthcheck for control-plane: exit 0 when healthy, 1 when not.
# Runs on the node with HOMELAB_ROOT, HOMELAB_NODE and HOMELAB_SERVICE set.
set -u
HOMELAB_ROOT=${HOMELAB_ROOT:-/opt/homelab}
HOMELAB_NODE=${HOMELAB_NODE:-$(hostname)}
HOMELAB_SERVICE=${HOMELAB_SERVICE:-control-plane}

fail() {
    echo "unhealthy: ${HOMELAB_SERVICE}@${HOMELAB_NODE}: $*" >&2
    exit 1
}

# probe URL: succeeds when URL answers 2xx/3xx within 5 seconds (curl, else wget).
probe() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 5 "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O /dev/null -T 5 "$1"
    else
        echo "note: neither curl nor wget on ${HOMELAB_NODE}; skipping the probe of $1" >&2
        return 0
    fi
}

# Container state as JSON (no Go template, so this file never collides with template syntax):
# the observer, the operator page and the Telegram bot.
for c in "$HOMELAB_SERVICE" "$HOMELAB_SERVICE-operator-ui" "$HOMELAB_SERVICE-telegram"; do
    state=$(docker inspect --type container "$c" 2>/dev/null) || fail "no container named $c"
    printf '%s\n' "$state" | grep -q '"Running": true' || fail "$c is not running"
    if printf '%s\n' "$state" | grep -q '"Restarting": true'; then fail "$c is restarting"; fi
    if printf '%s\n' "$state" | grep -q '"Status": "unhealthy"'; then fail "Docker reports $c unhealthy"; fi
done

# The operator UI must be listening on the loopback port caddy proxies to.
if command -v nc >/dev/null 2>&1; then
    nc -z -w 5 127.0.0.1 8080 || fail "nothing listens on 127.0.0.1:8080"
fi

echo "healthy: ${HOMELAB_SERVICE}@${HOMELAB_NODE}"
exit 0
