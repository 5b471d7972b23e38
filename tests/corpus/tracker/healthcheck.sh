#!/bin/sh
# Healthy when the migration container succeeded, the tracker runs, and the database is at the
# version of the newest migration this release ships.
set -u
fail() { echo "unhealthy: tracker: $*"; exit 1; }
exit_code=$(docker inspect -f '{{.State.ExitCode}} {{.State.Status}}' tracker-migrate 2>&1) || fail "no migration: $exit_code"
[ "$exit_code" = "0 exited" ] || fail "migration: $exit_code"
release="$HOMELAB_ROOT/state/services/$HOMELAB_SERVICE/migrations"
want=$(ls "$release" | grep -c '^[0-9][0-9][0-9]-') || fail "no migrations in $release"
have=$(docker exec tracker wget -q -O - http://127.0.0.1:3000/schema_version 2>&1) || fail "no answer: $have"
[ "$have" = "$want" ] || fail "schema at version $have, release ships $want migrations"
echo "healthy: tracker at schema version $have"
