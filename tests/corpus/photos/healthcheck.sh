#!/bin/sh
# Healthy when the server runs with the settings rendered for this node and its ML sidecar
# answers.
set -u
fail() { echo "unhealthy: photos: $*"; exit 1; }
conf=$(docker exec photos wget -q -O - http://127.0.0.1:2283/photos.conf 2>&1) || fail "no answer: $conf"
echo "$conf" | grep -qx "server_name = photos@$HOMELAB_NODE" || fail "settings are not this node's: $conf"
ml=$(docker exec photos wget -q -O - http://ml:3003/status 2>&1) || fail "ML sidecar: $ml"
[ "$ml" = ready ] || fail "ML sidecar: $ml"
echo "healthy: photos"
