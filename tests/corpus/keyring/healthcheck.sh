#!/bin/sh
# Healthy when the app and its database read the same database password from their secret
# files, the admin token is there, and the app trusts the shipped CA certificate.
set -u
fail() { echo "unhealthy: keyring: $*"; exit 1; }
app=$(docker exec keyring wget -q -O - http://127.0.0.1:8080/db-password.sha256 2>&1) || fail "app: $app"
db=$(docker exec keyring wget -q -O - http://db:5432/password.sha256 2>&1) || fail "database: $db"
[ -n "$app" ] && [ "$app" = "$db" ] || fail "the app and the database disagree on the password"
docker exec keyring test -s /run/secrets/admin_token || fail "no admin token"
certs=$(docker exec keyring wget -q -O - http://127.0.0.1:8080/ca-certs 2>&1) || fail "no CA: $certs"
[ "$certs" -ge 1 ] 2>/dev/null || fail "no CA certificate in the bundle: $certs"
echo "healthy: keyring"
