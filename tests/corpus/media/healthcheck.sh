#!/bin/sh
# Healthy when the server answers with the configuration it runs and no opt-in profile
# container was started by a plain `up`.
set -u
fail() { echo "unhealthy: media: $*"; exit 1; }
conf=$(docker exec media wget -q -O - http://127.0.0.1:8096/served-with.conf 2>&1) || fail "no answer: $conf"
echo "$conf" | grep -q '^library = /media/library$' || fail "unexpected configuration: $conf"
for c in media-transcoder media-scanner; do
    if docker inspect --type container "$c" >/dev/null 2>&1; then fail "$c runs without its profile"; fi
done
echo "healthy: media"
