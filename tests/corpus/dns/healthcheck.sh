#!/bin/sh
# Healthy when the resolver serves its stats with every domain of its blocklist counted, and
# the admin (an unprivileged user) reaches the resolver over the internal network.
set -u
fail() { echo "unhealthy: dns: $*"; exit 1; }
stats=$(docker exec dns-admin wget -q -O - http://dns:5380/stats 2>&1) || fail "admin cannot reach the resolver: $stats"
list=$(docker exec dns cat /etc/dns/blocklist.txt 2>&1) || fail "no blocklist: $list"
want=$(echo "$list" | grep -vc '^#')
echo "$stats" | grep -q "^blocked_domains=$want " || fail "stats $stats, blocklist has $want"
uid=$(docker exec dns-admin id -u 2>&1)
[ "$uid" = 65534 ] || fail "admin runs as $uid"
echo "healthy: dns"
