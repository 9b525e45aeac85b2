#!/usr/bin/env bash
# The renewal check, dcvd against certbot 2.1 from Debian, over the same N
# certificates, none due, on this machine, in one run.
#
#   bench/certbot.sh                     N=1000, from the repository root
#   N=10000 CERTBOT_RUNS=3 bench/certbot.sh
#
# What is compared: the time to decide that nothing is due.
#   certbot   "certbot renew --no-random-sleep-on-renew" over N lineages
#             (live/ symlinks into archive/, renewal/NAME.conf as certbot 2.1
#             writes them), generated offline by bench/sweep/lineages.
#   dcvd      - bench/sweep: a whole process that starts as "dcvd run" does
#               (configuration, state), makes the first renewal check over
#               N [[certificate]] and exits; the deploy directories hold the
#               same certificates, which the first run adopts (timed apart,
#               then every timed run finds them in the state);
#             - BenchmarkSweep (go test -bench): the check alone, in process,
#               over N certificates in a seeded store.
# Both sides are timed the same way: the median of the runs' wall time, and
# of their CPU time (user+sys of the process and its children), which is the
# fairer figure on a busy machine.
#
# certbot's fixed cost (Python start-up, imports, plugin discovery) is
# measured apart: "certbot renew" over no lineage, and "certbot --version".
#
# Environment (defaults):
#   N=1000             certificates (1 to 99999)
#   CERTBOT_RUNS=5     timed runs of certbot renew over N
#   DCVD_RUNS=20       timed runs of bench/sweep
#   FIXED_RUNS=5       timed runs of each fixed-cost measure
#   BENCHTIME=20x      -benchtime of BenchmarkSweep
#   KEEP=              non-empty: keep the work directory and print its path
#
# Needs: go, root (or certbot already installed: it is installed with apt-get
# install -y certbot when missing). No network beyond apt: nothing is due, so
# neither tool calls its CA.
set -euo pipefail
# The time keyword's and awk's numbers with a decimal point, whatever the locale.
export LC_ALL=C

N=${N:-1000}
CERTBOT_RUNS=${CERTBOT_RUNS:-5}
DCVD_RUNS=${DCVD_RUNS:-20}
FIXED_RUNS=${FIXED_RUNS:-5}
BENCHTIME=${BENCHTIME:-20x}
KEEP=${KEEP:-}

log() { printf 'certbot.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for v in N CERTBOT_RUNS DCVD_RUNS FIXED_RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
((N <= 99999)) || die "N=$N: at most 99999"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -f go.mod ] || [ ! -d bench/sweep ]; then die "run from the dcvd repository"; fi

# --- certbot from Debian -------------------------------------------------------
if ! command -v certbot >/dev/null 2>&1; then
  ((EUID == 0)) || die "certbot is not installed, and installing it needs root: apt-get install -y certbot"
  log "installing certbot from Debian"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y certbot >/dev/null; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y certbot >/dev/null
  fi
fi
certbot_version=$(certbot --version 2>&1 | awk '{print $2}')
[[ $certbot_version == 2.1.* ]] || log "warning: certbot $certbot_version, not 2.1 (Debian bookworm's): figures not comparable"

# --- the work directory ------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcvd-bench-certbot.XXXXXX")
cleanup() {
  if [ -n "$KEEP" ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

log "building bench/sweep, bench/sweep/lineages"
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/sweep" ./bench/sweep
go build -o "$WORK/bin/lineages" ./bench/sweep/lineages

log "generating $N certificates (certbot lineages and dcvd deploy directories)"
"$WORK/bin/lineages" -dir "$WORK/n" -n "$N" -certbot-version "$certbot_version" >&2
"$WORK/bin/lineages" -dir "$WORK/one" -n 1 -certbot-version "$certbot_version" >&2
mkdir -p "$WORK/zero/certbot/config" "$WORK/zero/certbot/work" "$WORK/zero/certbot/logs"

# --- timing --------------------------------------------------------------------
# timed NAME CMD...: runs CMD once (stdout to $WORK/NAME.out, also appended
# to $WORK/NAME.out.all; stderr to $WORK/NAME.err) and appends "wall_ms
# cpu_ms" to $WORK/NAME.times; the CPU time is user+sys of CMD and its
# children (bash's time keyword).
timed() {
  local name=$1 t
  shift
  if ! t=$({
    TIMEFORMAT='%3R %3U %3S'
    time "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null
  } 2>&1); then
    cat "$WORK/$name.err" >&2
    die "$name failed: $*"
  fi
  cat "$WORK/$name.out" >>"$WORK/$name.out.all"
  awk '{printf "%.1f %.1f\n", $1 * 1000, ($2 + $3) * 1000}' <<<"$t" >>"$WORK/$name.times"
}

# repeat NAME RUNS CMD...: timed, RUNS times.
repeat() {
  local name=$1 runs=$2 i
  shift 2
  : >"$WORK/$name.times"
  : >"$WORK/$name.out.all"
  for ((i = 0; i < runs; i++)); do timed "$name" "$@"; done
}

# median NAME COLUMN: the median of a column of $WORK/NAME.times (1 wall,
# 2 cpu), in ms.
median() {
  sort -n -k"$2,$2" "$WORK/$1.times" | awk -v c="$2" '{v[NR] = $c} END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

certbot_renew() { # DIR
  certbot renew --config-dir "$1/certbot/config" --work-dir "$1/certbot/work" \
    --logs-dir "$1/certbot/logs" --no-random-sleep-on-renew
}

# --- certbot -----------------------------------------------------------------------
# --no-random-sleep-on-renew is in certbot 2.1, hidden from --help; without
# it a renew that finds something due first sleeps up to 8 minutes. An
# unknown option would fail this first run over no lineage.
certbot_renew "$WORK/zero" >/dev/null 2>"$WORK/probe.err" </dev/null ||
  die "certbot renew --no-random-sleep-on-renew failed: $(head -c 2000 "$WORK/probe.err")"
log "certbot renew over $N lineages, $CERTBOT_RUNS runs"
repeat certbot "$CERTBOT_RUNS" certbot_renew "$WORK/n"
grep -q 'No renewals were attempted' "$WORK/certbot.out" || die "certbot attempted a renewal: see $WORK/certbot.out"
skipped=$(grep -c '(skipped)' "$WORK/certbot.out" || true)
[ "$skipped" -eq "$N" ] || die "certbot skipped $skipped lineages, not $N: $(head -c 2000 "$WORK/certbot.err")"

log "certbot's fixed cost: renew over no lineage, --version; $FIXED_RUNS runs each"
repeat certbot0 "$FIXED_RUNS" certbot_renew "$WORK/zero"
repeat certbotv "$FIXED_RUNS" certbot --version
repeat python "$FIXED_RUNS" python3 -c pass

# --- dcvd -------------------------------------------------------------------------
log "dcvd: first run over $N certificates (adopts the deploy directories' certificates)"
timed dcvdfirst "$WORK/bin/sweep" --config "$WORK/n/dcvd/dcvd.toml"
timed dcvdfirst1 "$WORK/bin/sweep" --config "$WORK/one/dcvd/dcvd.toml"
check_dcvd() { # NAME WANT: every certificate in the state, no order started
  local line
  line=$(tail -n 1 "$WORK/$1.out")
  [[ $line == *"certificates=$2 "* && $line == *" live=$2 "* && $line == *" in_flight=0 "* ]] ||
    die "dcvd did not find all $2 certificates live and none due: $line"
}
check_dcvd dcvdfirst "$N"

log "dcvd: bench/sweep over $N certificates, $DCVD_RUNS runs; over 1, $FIXED_RUNS runs"
repeat dcvd "$DCVD_RUNS" "$WORK/bin/sweep" --config "$WORK/n/dcvd/dcvd.toml"
check_dcvd dcvd "$N"
repeat dcvd1 "$FIXED_RUNS" "$WORK/bin/sweep" --config "$WORK/one/dcvd/dcvd.toml"
check_dcvd dcvd1 1
# The in-process split of the timed runs over N: the median of each field.
inproc() { # FIELD
  sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$WORK/dcvd.out.all" | sort -n |
    awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

if ((N % 1000 == 0)); then sub="$((N / 1000))k"; else sub="$N"; fi
log "dcvd: BenchmarkSweep/$sub, -benchtime $BENCHTIME"
DCVD_SWEEP_BENCH_N=$N go test -run '^$' -bench "^BenchmarkSweep\$/^$sub\$" -benchtime "$BENCHTIME" ./daemon/ >"$WORK/gobench.out" 2>&1 ||
  {
    cat "$WORK/gobench.out" >&2
    die "go test -bench failed"
  }
bench_ns=$(awk -v p="BenchmarkSweep/$sub" 'index($1, p) == 1 {print $3}' "$WORK/gobench.out" | tail -n 1)
[ -n "$bench_ns" ] || die "no BenchmarkSweep/$sub figure in: $(cat "$WORK/gobench.out")"
bench_ms=$(awk -v n="$bench_ns" 'BEGIN {printf "%.1f", n / 1e6}')
# BenchmarkSweep also reports the process's CPU time per check.
bench_cpu=$(awk -v p="BenchmarkSweep/$sub" 'index($1, p) == 1 {for (i = 4; i < NF; i++) if ($(i + 1) == "cpu-ms/op") print $i}' "$WORK/gobench.out" | tail -n 1)

# --- summary ---------------------------------------------------------------------
cb_wall=$(median certbot 1) cb_cpu=$(median certbot 2)
cb0_wall=$(median certbot0 1) cb0_cpu=$(median certbot0 2)
cbv_wall=$(median certbotv 1) cbv_cpu=$(median certbotv 2)
py_wall=$(median python 1) py_cpu=$(median python 2)
d_wall=$(median dcvd 1) d_cpu=$(median dcvd 2)
d1_wall=$(median dcvd1 1) d1_cpu=$(median dcvd1 2)
first_wall=$(awk '{print $1}' "$WORK/dcvdfirst.times")
first_cpu=$(awk '{print $2}' "$WORK/dcvdfirst.times")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.0f", a / b; else print "inf"}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.0f%%", 100 * a / b; else print "-"}'; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.3f", (a - b) / n}'; }

row() { printf '%-44s %10s %10s %6s\n' "$@"; }
printf '\n== Renewal check over N=%s certificates, none due: certbot %s vs dcvd\n' "$N" "$certbot_version"
printf '   %s, %s CPUs, load average %s; medians of the runs; ms\n' \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
row "" wall cpu runs
row "certbot renew over $N lineages" "$cb_wall" "$cb_cpu" "$CERTBOT_RUNS"
row "  certbot renew over 0 lineages (fixed)" "$cb0_wall" "$cb0_cpu" "$FIXED_RUNS"
row "  certbot --version" "$cbv_wall" "$cbv_cpu" "$FIXED_RUNS"
row "  python3 -c pass" "$py_wall" "$py_cpu" "$FIXED_RUNS"
row "dcvd whole process (bench/sweep) over $N" "$d_wall" "$d_cpu" "$DCVD_RUNS"
printf '  in process: config %s, open %s, check %s, all %s\n' \
  "$(inproc config_ms)" "$(inproc open_ms)" "$(inproc check_ms)" "$(inproc in_process_ms)"
row "  dcvd over 1 certificate (fixed)" "$d1_wall" "$d1_cpu" "$FIXED_RUNS"
row "  first run over $N (adopts them all)" "$first_wall" "$first_cpu" 1
row "dcvd check alone (BenchmarkSweep/$sub)" "$bench_ms" "$bench_cpu" "$BENCHTIME"
d_per=$(per "$d_cpu" "$d1_cpu" "$((N > 1 ? N - 1 : 1))")
cb_per=$(per "$cb_cpu" "$cb0_cpu" "$N")
printf '\nRatios (certbot / dcvd):\n'
printf '  whole process: wall %sx, cpu %sx\n' "$(ratio "$cb_wall" "$d_wall")" "$(ratio "$cb_cpu" "$d_cpu")"
printf '  certbot process / dcvd check alone (BenchmarkSweep): wall %sx, cpu %sx\n' \
  "$(ratio "$cb_wall" "$bench_ms")" "$(ratio "$cb_cpu" "$bench_cpu")"
printf '  per certificate beyond the fixed cost, cpu: %s ms vs %s ms = %sx\n' "$cb_per" "$d_per" "$(ratio "$cb_per" "$d_per")"
printf "certbot's fixed cost (Python start-up, imports, plugin discovery: renew over 0 lineages)\n"
printf '  is %s of its wall time and %s of its cpu time over %s lineages.\n' \
  "$(pct "$cb0_wall" "$cb_wall")" "$(pct "$cb0_cpu" "$cb_cpu")" "$N"
