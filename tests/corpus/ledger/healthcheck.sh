#!/bin/sh
# Healthy when the app runs with its settings interpolated (a secret key set, a currency) and
# reaches its database.
set -u
fail() { echo "unhealthy: ledger: $*"; exit 1; }
settings=$(docker exec ledger wget -q -O - http://127.0.0.1:8000/settings 2>&1) || fail "no settings: $settings"
echo "$settings" | grep -q '^currency=[A-Z][A-Z][A-Z] workers=[0-9]' || fail "settings: $settings"
key=$(docker exec ledger wget -q -O - http://127.0.0.1:8000/secret-key 2>&1) || fail "no secret key"
[ "$key" = set ] || fail "secret key: $key"
db=$(docker exec ledger wget -q -O - http://db:5432/PG_VERSION 2>&1) || fail "database: $db"
echo "healthy: ledger"
