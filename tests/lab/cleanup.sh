#!/usr/bin/env bash
# Removes what test labs (tests/it/lab.rs) left behind when their test process died without
# tearing down (SIGKILL, a crash): for each lab slot whose owner is gone, its processes,
# containers, mounts, network namespaces, veths, route, cgroups and folders. A lab started later
# on the same slot does the same by itself; this is for cleaning up by hand.
#
# usage: tests/lab/cleanup.sh          slots whose owner process is gone
#        tests/lab/cleanup.sh --all    every slot, live or not (stops running labs too)
set -uo pipefail

slots_dir=/run/homelab-lab
tmp=${TMPDIR:-/tmp}
all=false
[ "${1:-}" = --all ] && all=true

alive() { # "<pid> <start time>" -> is that process still the one that claimed the slot?
  local pid start
  read -r pid start <<<"$1"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  local stat rest
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  [ "$(awk '{print $20}' <<<"$rest")" = "$start" ]
}

kill_pids() { [ $# -gt 0 ] && kill -KILL "$@" 2>/dev/null; true; }

sweep() { # slot number
  local s=$1 ns name d root m
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^hl-$s-"); do
    for _ in 1 2 3 4 5; do
      kill_pids $(ip netns pids "$ns" 2>/dev/null)
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null
  done
  for root in $(awk '$9 ~ /^cgroup2?$/ {print $5}' /proc/self/mountinfo); do
    for d in "$root"/hl-"$s"-*; do
      [ -d "$d" ] || continue
      find "$d" -name freezer.state -exec sh -c 'echo THAWED > "$1"' _ {} \; 2>/dev/null
      for _ in 1 2 3 4 5; do
        kill_pids $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
        sleep 0.1
      done
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  for name in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^hlv${s}n[0-9]+$"); do
    ip link del "$name" 2>/dev/null
  done
  ip route del unreachable "10.$((77 + s)).0.0/16" 2>/dev/null
  for _ in 1 2 3; do
    m=$(awk '{print $5}' /proc/self/mountinfo | grep "^$tmp/hl-lab-$s-" | sort -r)
    [ -z "$m" ] && break
    umount -l $m 2>/dev/null
  done
  rm -rf "$tmp"/hl-lab-"$s"-*
}

mkdir -p "$slots_dir"
# Leftovers whose slot file is gone count as a slot with a dead owner.
for s in $( (ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^hl-\([0-9][0-9]*\)-.*/\1/p'
  ls "$tmp" 2>/dev/null | sed -n 's/^hl-lab-\([0-9][0-9]*\)-.*/\1/p') | sort -u); do
  [ -e "$slots_dir/$s" ] || echo "0 0" >"$slots_dir/$s"
done
for f in "$slots_dir"/[0-9]*; do
  [ -e "$f" ] || continue
  s=${f##*/}
  owner=$(cat "$f" 2>/dev/null)
  if ! $all && alive "$owner"; then
    echo "slot $s: owner ${owner%% *} alive, left alone"
    continue
  fi
  echo "slot $s: cleaning up (owner ${owner%% *})"
  sweep "$s"
  rm -f "$f"
done
for f in "$slots_dir"/.claim-* "$slots_dir"/.stale-*; do
  [ -e "$f" ] || continue
  pid=${f##*/.claim-}; pid=${pid##*/.stale-}; pid=${pid%%-*}
  [ -d "/proc/$pid" ] || rm -f "$f"
done
