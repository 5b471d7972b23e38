#!/bin/sh
# Healthy when a request through the proxy reaches the app (the proxy's routes and the app both
# work) and the index page is served.
set -u
fail() { echo "unhealthy: proxy: $*"; exit 1; }
body=$(docker exec proxy wget -q -O - "http://127.0.0.1:8080/cgi-bin/upstream?health.txt" 2>&1) \
    || fail "no answer through the proxy: $body"
[ "$body" = ok ] || fail "the proxy answered: $body"
index=$(docker exec proxy wget -q -O - http://127.0.0.1:8080/ 2>&1) || fail "no index: $index"
echo "healthy: proxy"
