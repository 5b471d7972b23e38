#!/bin/sh
# Healthcheck for stability-agent: exit 0 when healthy, 1 when not.
# Runs on the node with HOMELAB_ROOT, HOMELAB_NODE and HOMELAB_SERVICE set.
set -u
HOMELAB_ROOT=${HOMELAB_ROOT:-/opt/homelab}
HOMELAB_NODE=${HOMELAB_NODE:-$(hostname)}
HOMELAB_SERVICE=${HOMELAB_SERVICE:-stability-agent}

fail() {
    echo "unhealthy: ${HOMELAB_SERVICE}@${HOMELAB_NODE}: $*" >&2
    exit 1
}

# Container state as JSON (no Go template, so this file never collides with template syntax).
state=$(docker inspect --type container "$HOMELAB_SERVICE" 2>/dev/null) || fail "no container named ${HOMELAB_SERVICE}"
printf '%s\n' "$state" | grep -q '"Running": true' || fail "container is not running"
if printf '%s\n' "$state" | grep -q '"Restarting": true'; then fail "container is restarting"; fi
if printf '%s\n' "$state" | grep -q '"Status": "unhealthy"'; then fail "Docker reports the container unhealthy"; fi

# The agent appends events under the runtime root; without that folder it has nowhere to write.
[ -d "${HOMELAB_ROOT}/events" ] || fail "${HOMELAB_ROOT}/events is missing"

# The agent writes its heartbeat every interval (5 s); a minute without one is a stuck agent.
hb="${HOMELAB_ROOT}/state/agent/heartbeat.json"
[ -f "$hb" ] || fail "no heartbeat at $hb"
[ -n "$(find "$hb" -mmin -1 2>/dev/null)" ] || fail "the heartbeat at $hb is over a minute old"

echo "healthy: ${HOMELAB_SERVICE}@${HOMELAB_NODE}"
exit 0
