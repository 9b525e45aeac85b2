#!/usr/bin/env bash
# Mass reissue: N certificates reissued end to end as "dcvd reissue --all
# --wait" does it (the same code: package reissueall driving the daemon),
# against the sandbox CA and an in-process DNS server, under an [api]
# max_requests_per_second, on this machine. The incident it stands for: a CA
# revokes certificates en masse, with a 24-hour deadline.
#
#   bench/mass-reissue.sh                          N=10000, from the repository root
#   N="1000 10000" bench/mass-reissue.sh           one run per size, then a table
#   N=1000 RATE=100 CONCURRENCY=100 bench/mass-reissue.sh
#
# Each run prints: wall time, certificates/s, peak RSS of the process (the
# sandbox and the DNS server are in it too: an upper bound for dcvd), CPU
# time, the charges in the sandbox's ledger (exactly N, or the run fails),
# the API requests made and the time the rate limit alone imposes on them,
# and whether the goal is met: 10,000 certificates in at most 5 minutes, with
# a peak RSS of at most 256 MB.
#
# Environment (defaults):
#   N=10000            certificates; several sizes separated by spaces run in turn
#   ZONES=4            DNS zones the names are spread over
#   RATE=200           [api] max_requests_per_second (0: no limit)
#   CONCURRENCY=250    [daemon] max_concurrent
#   POLL=10s           [daemon] poll_interval
#   CALLBACKS=true     serve the daemon's callback handler (as a running daemon does)
#   RELOAD=true        each certificate's reload command (/bin/sh -c)
#   TIMEOUT=30m        give up after this long
#   PROFILE=           non-empty: write cpu.pprof and heap.pprof per run into the
#                      work directory (kept, and its path printed)
#   KEEP=              non-empty: keep the work directory and print its path
#   TMPDIR             where the work directory goes (the state, the deploy
#                      directories and the sandbox's state are written there:
#                      put it on the disk you want measured)
#
# Needs: go. Nothing leaves 127.0.0.1.
#
# The sandbox runs Ephemeral (its state in memory): otherwise it rewrites its
# whole state file on every API request and the run measures the sandbox.
set -euo pipefail

N=${N:-10000}
ZONES=${ZONES:-4}
RATE=${RATE:-200}
CONCURRENCY=${CONCURRENCY:-250}
POLL=${POLL:-10s}
CALLBACKS=${CALLBACKS:-true}
RELOAD=${RELOAD:-true}
TIMEOUT=${TIMEOUT:-30m}
PROFILE=${PROFILE:-}
KEEP=${KEEP:-}

log() { printf 'mass-reissue.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for n in $N; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "N=$N: want positive integers"
done
[[ $ZONES =~ ^[1-9][0-9]*$ ]] || die "ZONES=$ZONES: want a positive integer"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] && ((CONCURRENCY <= 1000)) || die "CONCURRENCY=$CONCURRENCY: want 1 to 1000"
[[ $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RATE=$RATE: want a number of requests per second"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f go.mod ] && [ -d bench/massreissue ] || die "run from the dcvd repository"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcvd-bench-mass.XXXXXX")
cleanup() {
  if [ -n "$KEEP" ] || [ -n "$PROFILE" ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

log "building bench/massreissue"
go build -o "$WORK/massreissue" ./bench/massreissue

{
  echo "machine: $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2 " MB RAM"}'), $(go version | awk '{print $3}'), $(uname -sr)"
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/machine.txt"

status=0
for n in $N; do
  run="$WORK/run-$n"
  mkdir -p "$run"
  args=(-n "$n" -zones "$ZONES" -rate "$RATE" -concurrency "$CONCURRENCY" -poll "$POLL"
    -callbacks "$CALLBACKS" -reload "$RELOAD" -timeout "$TIMEOUT" -dir "$run/world" -json "$run/result.json")
  if [ -n "$PROFILE" ]; then
    args+=(-cpuprofile "$run/cpu.pprof" -memprofile "$run/heap.pprof")
  fi
  log "reissuing $n certificates: ${args[*]}"
  if ! "$WORK/massreissue" "${args[@]}"; then
    status=1
    log "the run of $n certificates failed (see above)"
  fi
  [ -n "$KEEP" ] || rm -rf "$run/world"
done

# The table of every run, from the JSON each one wrote.
echo
echo "== mass reissue, summary (goal: 10000 certificates in <= 300 s, peak RSS <= 256 MB)"
printf '%8s %8s %10s %9s %8s %9s %9s %10s %8s %s\n' \
  certs rate wall_s certs/s RSS_MB charges requests rate_fl_s wall/fl goal
for n in $N; do
  f="$WORK/run-$n/result.json"
  [ -f "$f" ] || {
    printf '%8s  (no result)\n' "$n"
    continue
  }
  awk -v n="$n" '
    match($0, /"[a-z_]+": /) {
      k = substr($0, RSTART + 1, RLENGTH - 4)
      v = substr($0, RSTART + RLENGTH); sub(/,$/, "", v); gsub(/"/, "", v)
      r[k] = v
    }
    END {
      floor = r["rate_floor_seconds"] + 0
      ratio = floor > 0 ? sprintf("%.2f", r["wall_seconds"] / floor) : "-"
      goal = (r["goal_wall_met"] == "true" ? "wall ok" : "wall MISSED") ", " (r["goal_rss_met"] == "true" ? "rss ok" : "rss MISSED")
      if (n != 10000) goal = goal " (scaled to 10000)"
      printf "%8d %8s %10.1f %9.1f %8.1f %9d %9d %10.1f %8s %s\n", n, r["max_requests_per_second"], r["wall_seconds"],
        r["certificates_per_second"], r["peak_rss_bytes"] / 1048576, r["charges"], r["api_requests"], floor, ratio, goal
    }' "$f"
done
exit $status
