#!/usr/bin/env bash
# What an idle dcvd costs: "dcvd run" with N certificates configured, all
# with a live certificate not due, measured over DURATION seconds.
#
#   bench/idle.sh                           N=1000, DURATION=600, from the repository root
#   DURATION=30 bench/idle.sh               a quick try
#   METRICS_LISTEN=127.0.0.1:9402 bench/idle.sh   with the Prometheus endpoint on
#
# Method:
#   - bench/sweep/lineages writes N certificates (ECDSA P-256, 80 days
#     left) into deploy directories and a dcvd configuration naming them;
#     bench/sweep runs dcvd's renewal check once on it, which adopts them
#     all into the state: "dcvd run" then starts on a state holding N live
#     certificates, none due, as a daemon restarted on a busy host would.
#   - start-to-ready: from just before exec to READY=1 on NOTIFY_SOCKET,
#     read by a small unixgram listener (the sd_notify protocol, as systemd
#     speaks it: see internal/e2e/sighup_test.go), with WATCHDOG_USEC as the
#     shipped unit sets it (WatchdogSec=5min). READY=1 is sent once the
#     state is open and the listeners are up, before the first check; the
#     end of that first check (the log line "next renewal check") is
#     reported too.
#   - idle: from the end of the first check, DURATION seconds: CPU is
#     utime+stime of /proc/PID/stat over that window, as a percentage of
#     one core; memory is VmRSS sampled every SAMPLE seconds (its maximum
#     and last value) and VmHWM (the peak since the start, start-up
#     included), from /proc/PID/status.
#   - then SIGTERM: dcvd must exit 0.
#
# Environment (defaults):
#   N=1000  DURATION=600  SAMPLE=10  METRICS_LISTEN=  KEEP=
#   Goals (issue 8): RSS <= 40 MB and CPU <= 0.1 % of a core.
#
# Needs: go, Linux /proc. No network: nothing is due, so dcvd calls no API.
set -euo pipefail
# EPOCHREALTIME and awk's numbers with a decimal point, whatever the locale.
export LC_ALL=C

N=${N:-1000}
DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
METRICS_LISTEN=${METRICS_LISTEN:-}
KEEP=${KEEP:-}
readonly GOAL_RSS_MB=40 GOAL_CPU_PCT=0.1 READY_TIMEOUT=120

log() { printf 'idle.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for v in N DURATION SAMPLE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -f go.mod ] || [ ! -d bench/sweep ]; then die "run from the dcvd repository"; fi
[ -r /proc/self/stat ] || die "needs Linux /proc"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcvd-bench-idle.XXXXXX")
DCVD_PID=''
LISTENER_PID=''
cleanup() {
  if [ -n "$DCVD_PID" ] && kill -0 "$DCVD_PID" 2>/dev/null; then
    kill -TERM "$DCVD_PID" 2>/dev/null || true
    wait "$DCVD_PID" 2>/dev/null || true
  fi
  if [ -n "$LISTENER_PID" ]; then
    kill "$LISTENER_PID" 2>/dev/null || true
    wait "$LISTENER_PID" 2>/dev/null || true
  fi
  if [ -n "$KEEP" ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "building dcvd, bench/sweep, bench/sweep/lineages and the notify listener"
mkdir -p "$WORK/bin" "$WORK/listener"
go build -o "$WORK/bin/dcvd" ./cmd/dcvd
go build -o "$WORK/bin/sweep" ./bench/sweep
go build -o "$WORK/bin/lineages" ./bench/sweep/lineages
# The listener prints each datagram as "UNIX_NANOSECONDS MESSAGE" (newlines
# of a message as spaces), one line each, at once.
cat >"$WORK/listener/main.go" <<'EOF'
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: os.Args[1], Net: "unixgram"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 8192)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d %s\n", time.Now().UnixNano(), strings.ReplaceAll(string(buf[:n]), "\n", " "))
	}
}
EOF
(cd "$WORK/listener" && go build -o "$WORK/bin/notify-listener" main.go)

log "writing $N certificates and adopting them into the state"
metrics_flag=()
[ -z "$METRICS_LISTEN" ] || metrics_flag=(-metrics-listen "$METRICS_LISTEN")
"$WORK/bin/lineages" -dir "$WORK/n" -n "$N" "${metrics_flag[@]}" >&2
cfg="$WORK/n/dcvd/dcvd.toml"
adopted=$("$WORK/bin/sweep" --config "$cfg")
[[ $adopted == *" live=$N in_flight=0 "* ]] || die "the adoption run left: $adopted"

# --- start ---------------------------------------------------------------------
sock="$WORK/notify.sock"
"$WORK/bin/notify-listener" "$sock" >"$WORK/notify.log" 2>"$WORK/notify.err" &
LISTENER_PID=$!
for ((i = 0; i < 200; i++)); do
  if [ -S "$sock" ]; then break; fi
  sleep 0.01
done
[ -S "$sock" ] || die "the notify listener did not start: $(cat "$WORK/notify.err")"

clk_tck=$(getconf CLK_TCK)
now_ns() { local t=$EPOCHREALTIME; echo "${t/./}000"; }
start_ns=$(now_ns)
NOTIFY_SOCKET="$sock" WATCHDOG_USEC=300000000 "$WORK/bin/dcvd" run --config "$cfg" >"$WORK/dcvd.out" 2>"$WORK/dcvd.log" &
DCVD_PID=$!

# wait_for WHAT CMD...: polls CMD every 10 ms until it succeeds.
wait_for() {
  local what=$1 i
  shift
  for ((i = 0; i < READY_TIMEOUT * 100; i++)); do
    if "$@"; then return 0; fi
    kill -0 "$DCVD_PID" 2>/dev/null || die "dcvd exited before $what: $(tail -n 20 "$WORK/dcvd.log")"
    sleep 0.01
  done
  die "no $what after ${READY_TIMEOUT}s: $(tail -n 20 "$WORK/dcvd.log")"
}
wait_for READY=1 grep -q ' READY=1' "$WORK/notify.log"
ready_ns=$(awk '$2 == "READY=1" {print $1; exit}' "$WORK/notify.log")
wait_for "the first check's end" grep -q 'next renewal check' "$WORK/dcvd.log"
checked_ns=$(now_ns) # within the 10 ms poll

# /proc readings of the process.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DCVD_PID/stat"; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$DCVD_PID/status"; }

startup_ticks=$(cpu_ticks)
startup_rss_kb=$(status_kb VmRSS)
log "ready; idle for ${DURATION}s (RSS sampled every ${SAMPLE}s)"
t0_ns=$(now_ns)
ticks0=$(cpu_ticks)
max_rss_kb=0 samples=0
end_ns=$((t0_ns + DURATION * 1000000000))
while :; do
  left_ns=$((end_ns - $(now_ns)))
  ((left_ns > 0)) || break
  if ((left_ns > SAMPLE * 1000000000)); then sleep "$SAMPLE"; else sleep "$(awk -v n="$left_ns" 'BEGIN {printf "%.3f", n / 1e9}')"; fi
  kill -0 "$DCVD_PID" 2>/dev/null || die "dcvd exited while idle: $(tail -n 20 "$WORK/dcvd.log")"
  rss=$(status_kb VmRSS)
  ((rss > max_rss_kb)) && max_rss_kb=$rss
  samples=$((samples + 1))
done
ticks1=$(cpu_ticks)
t1_ns=$(now_ns)
last_rss_kb=$(status_kb VmRSS)
anon_kb=$(status_kb RssAnon)
file_kb=$(status_kb RssFile)
hwm_kb=$(status_kb VmHWM)
threads=$(status_kb Threads)
watchdogs=$(grep -c ' WATCHDOG=1' "$WORK/notify.log" || true)
last_status=$(awk '$2 ~ /^STATUS=/ {s = $0} END {sub(/^[0-9]+ STATUS=/, "", s); print s}' "$WORK/notify.log")

# --- stop ----------------------------------------------------------------------
kill -TERM "$DCVD_PID"
rc=0
wait "$DCVD_PID" || rc=$?
DCVD_PID=''
((rc == 0)) || die "dcvd exited $rc on SIGTERM: $(tail -n 20 "$WORK/dcvd.log")"
grep -q ' STOPPING=1' "$WORK/notify.log" || die "dcvd did not say STOPPING=1"

# --- summary -------------------------------------------------------------------
awk -v n="$N" -v dur="$DURATION" -v start="$start_ns" -v ready="$ready_ns" -v checked="$checked_ns" \
  -v t0="$t0_ns" -v t1="$t1_ns" -v k0="$ticks0" -v k1="$ticks1" -v hz="$clk_tck" -v sk="$startup_ticks" \
  -v srss="$startup_rss_kb" -v mrss="$max_rss_kb" -v lrss="$last_rss_kb" -v hwm="$hwm_kb" -v anon="$anon_kb" -v file="$file_kb" -v samples="$samples" \
  -v threads="$threads" -v wd="$watchdogs" -v status="$last_status" -v metrics="${METRICS_LISTEN:-off}" \
  -v goal_rss="$GOAL_RSS_MB" -v goal_cpu="$GOAL_CPU_PCT" -v when="$(date -u '+%Y-%m-%d %H:%M UTC')" \
  -v cpus="$(nproc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
  elapsed = (t1 - t0) / 1e9
  cpu_s = (k1 - k0) / hz
  pct = 100 * cpu_s / elapsed
  rss_mb = (mrss > lrss ? mrss : lrss) / 1024
  printf "\n== dcvd idle with N=%d certificates, none due, metrics_listen %s (%s, %d CPUs, load average %s)\n", n, metrics, when, cpus, load
  printf "start to READY=1 (sd_notify)           %8.1f ms\n", (ready - start) / 1e6
  printf "start to the end of the first check    %8.1f ms (polled every 10 ms)\n", (checked - start) / 1e6
  printf "CPU of the start-up and first check    %8.1f ms\n", 1000 * sk / hz
  printf "RSS after the first check              %8.1f MB\n", srss / 1024
  printf "idle window                            %8.1f s, %d RSS samples\n", elapsed, samples
  printf "CPU while idle                         %8.3f s = %.4f %% of one core (goal <= %s %%: %s)\n", cpu_s, pct, goal_cpu, (pct <= goal_cpu ? "met" : "MISSED")
  printf "RSS while idle: max %.1f MB, last %.1f MB (goal <= %d MB: %s)\n", mrss / 1024, lrss / 1024, goal_rss, (rss_mb <= goal_rss ? "met" : "MISSED")
  printf "  last RSS = %.1f MB anonymous (heap, stacks, SQLite cache) + %.1f MB file-backed (the binary)\n", anon / 1024, file / 1024
  printf "VmHWM (peak since start)               %8.1f MB\n", hwm / 1024
  printf "threads %d; WATCHDOG=1 pings %d; last STATUS=%s\n", threads, wd, status
  printf "resolution: CPU in ticks of %.0f ms (%.4f %% over this window)\n", 1000 / hz, 100 / hz / elapsed
}'
