#!/bin/sh
# Applies, in order, every migration NNN-*.sh newer than the database's schema version, and
# records each one as it succeeds; a failing migration stops here with the version before it.
set -eu
db=/var/lib/tracker
mkdir -p "$db/issues"
[ -f "$db/schema_version" ] || echo 0 > "$db/schema_version"
for m in /migrations/[0-9][0-9][0-9]-*.sh; do
    n=$(basename "$m" | cut -c1-3 | sed 's/^0*//')
    [ "$n" -gt "$(cat "$db/schema_version")" ] || continue
    echo "migrate: applying $(basename "$m")"
    sh "$m" "$db"
    echo "$n" > "$db/schema_version"
done
echo "migrate: schema at version $(cat "$db/schema_version")"
