#!/bin/sh
# Healthy when the blog answers, reaches its database (schema in place, by the host name `db`)
# and its cache (by the host name `cache`).
set -u
fail() { echo "unhealthy: blog: $*"; exit 1; }
page=$(docker exec blog wget -q -O - http://127.0.0.1:8080/ 2>&1) || fail "no page: $page"
echo "$page" | grep -q '<h1>' || fail "no title in: $page"
schema=$(docker exec blog wget -q -O - http://db:3306/blog/schema.sql 2>&1) || fail "database: $schema"
echo "$schema" | grep -q 'CREATE TABLE posts' || fail "no schema: $schema"
pong=$(docker exec blog wget -q -O - http://cache:6379/ping 2>&1) || fail "cache: $pong"
[ "$pong" = PONG ] || fail "cache answered: $pong"
echo "healthy: blog"
