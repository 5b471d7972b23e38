#!/bin/sh
# Scrapes every target of targets.conf each SCRAPE_INTERVAL seconds: appends the samples to
# /tsdb/samples and writes the targets' state (`<job> up|down`) to /tsdb/targets.
mkdir -p /tsdb
while :; do
    : > /tsdb/targets.new
    grep -v '^#' /etc/monitoring/targets.conf | while read -r job target; do
        [ -n "$job" ] || continue
        if value=$(timeout 1 wget -q -O - "http://$target/metrics" 2>/dev/null); then
            echo "$(date +%s) $job $value" >> /tsdb/samples
            echo "$job up" >> /tsdb/targets.new
        else
            echo "$job down" >> /tsdb/targets.new
        fi
    done
    mv /tsdb/targets.new /tsdb/targets
    tail -n 1000 /tsdb/samples > /tsdb/samples.tmp 2>/dev/null && mv /tsdb/samples.tmp /tsdb/samples
    sleep "${SCRAPE_INTERVAL:-5}"
done
