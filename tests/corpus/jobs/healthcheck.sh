#!/bin/sh
# Healthy when the API answers and a job put on the queue is done by the worker within a
# second, with the result of the configured handler.
set -u
fail() { echo "unhealthy: jobs: $*"; exit 1; }
ready=$(docker exec jobs wget -q -O - http://127.0.0.1:8000/ready 2>&1) || fail "API: $ready"
name="healthcheck-$$"
# One exec enqueues and waits (up to 1 s) for the result.
result=$(docker exec jobs sh -c '
    echo ping > "/spool/incoming/$1"
    i=0
    while [ $i -lt 10 ]; do
        if [ -f "/spool/done/$1" ]; then cat "/spool/done/$1"; rm -f "/spool/done/$1"; exit 0; fi
        usleep 100000
        i=$((i + 1))
    done
    rm -f "/spool/incoming/$1"
    exit 1' sh "$name" 2>&1) || fail "the worker did not take the job within a second"
case $result in
    PING|gnip) echo "healthy: jobs ($result)" ;;
    *) fail "the worker answered: $result" ;;
esac
