#!/bin/sh
# The database's entrypoint, in the style of the official images: on an empty data folder it
# runs every script of /docker-entrypoint-initdb.d once, in order; then it serves the folder.
set -eu
datadir=/var/lib/mysql
if [ ! -f "$datadir/.initialized" ]; then
    for f in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$f" ] || continue
        echo "entrypoint: running $f"
        . "$f"
    done
    date +%s%N > "$datadir/.initialized"
fi
exec httpd -f -p 3306 -h "$datadir"
