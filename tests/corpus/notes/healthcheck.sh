#!/bin/sh
# Healthy when the built app serves its index and reports the version it was built as.
set -u
fail() { echo "unhealthy: notes: $*"; exit 1; }
index=$(docker exec notes wget -q -O - http://127.0.0.1:8000/ 2>&1) || fail "no index: $index"
echo "$index" | grep -q '<title>notes</title>' || fail "unexpected index: $index"
version=$(docker exec notes wget -q -O - http://127.0.0.1:8000/version.txt 2>&1) || fail "no version: $version"
[ -n "$version" ] || fail "empty version"
echo "healthy: notes $version"
