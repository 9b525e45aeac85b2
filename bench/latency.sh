#!/usr/bin/env bash
# bench/latency.sh — the latency benchmarks of issue 8, in one run:
#
#   1. callback → cert.pem renamed into the deploy directory (reload
#      excluded): p50/p99/max, goal p99 ≤ 100 ms;
#   2. DNS provider write calls per reissue of a certificate spanning 1, 2
#      and 3 zones (goal: one per zone);
#   3. DNS: record visible on every authoritative server → update-dcv call,
#      for provider lags of 0, 1, 3 and 7 s: p50/p99/max, goal ≤ 500 ms.
#
# The benchmarks are in daemon/latency_bench_test.go (in-process sandbox CA
# and DNS servers on 127.0.0.1). Sizes come from the environment:
#
#   CALLBACK_SAMPLES  orders measured for (1)              default 300
#   ZONE_SAMPLES      reissues per zone count for (2)      default 5
#   DNS_LAGS          "lag:samples ..." for (3)            default "0s:100 1s:40 3s:25 7s:20"
#
# Run from the repository root: bash bench/latency.sh
set -euo pipefail

cd "$(dirname "$0")/.."

CALLBACK_SAMPLES=${CALLBACK_SAMPLES:-300}
ZONE_SAMPLES=${ZONE_SAMPLES:-5}
DNS_LAGS=${DNS_LAGS:-"0s:100 1s:40 3s:25 7s:20"}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:     $(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "memory:  $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "fs:      $(df -T "$tmp" | awk 'NR==2 {print $2 " (" $1 ")"}') for temporary directories"
echo "go:      $(go version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo

go test -c -o "$tmp/daemon.test" ./daemon/

# bench NAME BENCHTIME runs one benchmark and appends its output to out.txt.
bench() {
	echo "== $1 (-benchtime=$2)"
	(cd daemon && "$tmp/daemon.test" -test.run '^$' -test.bench "$1" -test.benchtime "$2" -test.count 1) |
		tee -a "$tmp/out.txt" | grep -E '^(Benchmark|    latency_bench_test)' || {
		echo "benchmark $1 failed" >&2
		exit 1
	}
	echo
}

# metric NAME UNIT prints the value of UNIT on NAME's result line.
metric() {
	awk -v name="$1" -v unit="$2" '
		$1 ~ "^"name"(-[0-9]+)?$" { for (i = 3; i < NF; i++) if ($(i+1) == unit) { print $i; exit } }
	' "$tmp/out.txt"
}

# verdict VALUE GOAL prints how VALUE compares with GOAL (both in ms).
verdict() {
	awk -v v="$1" -v g="$2" 'BEGIN {
		if (v == "") { print "no figure"; exit }
		printf "%s (%.2f× the goal)", (v <= g ? "met" : "MISSED by " sprintf("%.0f ms", v - g)), v / g
	}'
}

bench 'BenchmarkCallbackToDeploy$' "${CALLBACK_SAMPLES}x"
bench 'BenchmarkDNSWriteCallsPerZone$' "${ZONE_SAMPLES}x"
for spec in $DNS_LAGS; do
	bench "BenchmarkDNSVisibleToRecheck/lag=${spec%%:*}\$" "${spec##*:}x"
done

echo "== summary"
cb=BenchmarkCallbackToDeploy
printf 'callback → cert.pem renamed:  p50 %s ms  p99 %s ms  max %s ms   goal p99 ≤ 100 ms: %s\n' \
	"$(metric $cb p50-ms)" "$(metric $cb p99-ms)" "$(metric $cb max-ms)" "$(verdict "$(metric $cb p99-ms)" 100)"
printf '  p99 by part: wake %s ms, detail+verify+commit %s ms, install %s ms\n' \
	"$(metric $cb wake-p99-ms)" "$(metric $cb fetch-p99-ms)" "$(metric $cb install-p99-ms)"
for k in 1 2 3; do
	n=BenchmarkDNSWriteCallsPerZone/zones=$k
	printf 'DNS write calls per reissue, %s zone(s), %s records: %s (%s per zone; goal 1)  deletes at cleanup: %s\n' \
		"$k" "$(metric "$n" records/reissue)" "$(metric "$n" writes/reissue)" \
		"$(awk -v w="$(metric "$n" writes/reissue)" -v k="$k" 'BEGIN { printf "%.2f", w / k }')" "$(metric "$n" deletes/reissue)"
done
for spec in $DNS_LAGS; do
	lag=${spec%%:*}
	n="BenchmarkDNSVisibleToRecheck/lag=$lag"
	printf 'DNS visible → update-dcv, lag %-3s (n=%s): p50 %s ms  p99 %s ms  max %s ms   goal ≤ 500 ms: %s\n' \
		"$lag" "${spec##*:}" "$(metric "$n" p50-ms)" "$(metric "$n" p99-ms)" "$(metric "$n" max-ms)" "$(verdict "$(metric "$n" max-ms)" 500)"
done
