#!/bin/sh
# Takes each job file off /spool/incoming, applies the configured handler to its content and
# writes the result to /spool/done under the same name.
conf=/etc/worker/worker.conf
handler=$(sed -n 's/^handler *= *//p' "$conf")
poll=$(sed -n 's/^poll_ms *= *//p' "$conf")
mkdir -p /spool/incoming /spool/done
echo "worker: handler $handler"
while :; do
    for job in /spool/incoming/*; do
        [ -f "$job" ] || continue
        name=$(basename "$job")
        case $handler in
            uppercase) tr 'a-z' 'A-Z' < "$job" > "/spool/done/$name.tmp" ;;
            reverse) rev < "$job" > "/spool/done/$name.tmp" ;;
            *) echo "worker: unknown handler $handler" > "/spool/done/$name.tmp" ;;
        esac
        mv "/spool/done/$name.tmp" "/spool/done/$name"
        rm -f "$job"
    done
    usleep "$(( ${poll:-500} * 1000 ))"
done
