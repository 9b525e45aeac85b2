#!/usr/bin/env bash
# The renewal check as a whole process, dcvd against certbot 2.1 from
# Debian, over the same N certificates, none due: paired runs.
#
#   bench/certbot.sh                     N=1000, 11 pairs, from the repository root
#   N=10000 PAIRS=7 bench/certbot.sh
#
# Method. Each pair is one certbot run and one dcvd run back to back, the
# order alternating (odd pairs certbot first, even pairs dcvd first), so
# that both sides of a pair see the same load on this machine. For each pair
# the ratio certbot / dcvd is taken of the wall time and of the CPU time;
# the figures are the median of those per-pair ratios (and their range),
# beside each tool's own median. One untimed pair runs first (warm caches).
#
# What is inside the clock, for both: the whole process, from the fork of
# the timed command to its exit (bash's time keyword: wall time, and user+sys
# CPU time of the process and its children from getrusage(RUSAGE_CHILDREN)).
#   certbot   certbot renew --config-dir D --work-dir D --logs-dir D
#                   --no-random-sleep-on-renew
#             over N lineages (live/ symlinks into archive/, renewal/NAME.conf
#             as certbot 2.1 writes them) generated offline by
#             bench/sweep/lineages; each run is checked: N "(skipped)" and
#             "No renewals were attempted".
#   dcvd      bench/sweep --config D/dcvd.toml
#             dcvd has no one-shot command ("dcvd run" is a daemon: it never
#             exits on its own after a check), so the closest equivalent is
#             timed instead: bench/sweep, a binary of its own built from the
#             daemon package, which starts as "dcvd run" does (loads the
#             configuration with its N [[certificate]], opens the state and
#             the daemon), runs until the daemon's first renewal check over
#             every certificate has ended, closes the daemon and exits. Not
#             in it, unlike "dcvd run": the control socket, notifications,
#             sd_notify and the log (it logs nowhere). In it, unlike "dcvd
#             run": two reads of the state after the check (to verify that
#             all N are live and none was due). Each run is checked:
#             certificates=N live=N in_flight=0.
#             The first run over a fresh state adopts the N certificates
#             found in the deploy directories (one row each); it runs, untimed
#             in the pairs, before them, and its time is printed apart.
# Fixed cost, also paired (FIXED_PAIRS): the same two commands over one
# certificate. The per-certificate cost beyond it, (median over N - median
# over 1) / (N - 1), is derived from medians, not paired, and labelled so.
#
# Nothing here compares a whole process with an in-process loop: the
# in-process check alone is BenchmarkSweep (go test -bench, BENCHMARKS.md §1),
# which this script does not run. The split that bench/sweep prints of its own
# time (config, open, check) is shown for dcvd only, as its own clock reads it.
#
# Printed: each pair (order, both tools' wall and CPU ms, the ratios, the
# 1-minute load average when the pair started), the medians, nproc, and
# /proc/loadavg before and after.
#
# Environment (defaults):
#   N=1000             certificates (2 to 99999)
#   PAIRS=11           timed pairs over N (at least 3; odd is best)
#   FIXED_PAIRS=5      timed pairs over 1 certificate (0: none)
#   KEEP=              non-empty: keep the work directory and print its path
#
# Needs: go, root (or certbot already installed: it is installed with apt-get
# install -y certbot when missing). No network beyond apt: nothing is due, so
# neither tool calls its CA. It starts no daemon and signals no process.
set -euo pipefail
# The time keyword's and awk's numbers with a decimal point, whatever the locale.
export LC_ALL=C

N=${N:-1000}
PAIRS=${PAIRS:-11}
FIXED_PAIRS=${FIXED_PAIRS:-5}
KEEP=${KEEP:-}

log() { printf 'certbot.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for v in CERTBOT_RUNS DCVD_RUNS FIXED_RUNS BENCHTIME; do
  [ -z "${!v:-}" ] || log "warning: $v is no longer read (runs are paired: PAIRS, FIXED_PAIRS)"
done
if ! [[ $N =~ ^[1-9][0-9]*$ ]] || ((N < 2 || N > 99999)); then die "N=$N: want 2 to 99999"; fi
if ! [[ $PAIRS =~ ^[1-9][0-9]*$ ]] || ((PAIRS < 3)); then die "PAIRS=$PAIRS: want at least 3"; fi
[[ $FIXED_PAIRS =~ ^[0-9]+$ ]] || die "FIXED_PAIRS=$FIXED_PAIRS: want 0 or more"

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
certbot_bin=$(command -v certbot)
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

# The two timed command lines, over a directory laid out by lineages.
certbot_cmd() { # DIR
  cmd=("$certbot_bin" renew --config-dir "$1/certbot/config" --work-dir "$1/certbot/work"
    --logs-dir "$1/certbot/logs" --no-random-sleep-on-renew)
}
dcvd_cmd() { # DIR
  cmd=("$WORK/bin/sweep" --config "$1/dcvd/dcvd.toml")
}

# --- timing --------------------------------------------------------------------
# timed NAME CMD...: runs CMD once, a process of its own (stdout to
# $WORK/NAME.out, stderr to $WORK/NAME.err), and sets t_wall and t_cpu (ms):
# its wall time and the user+sys CPU time of it and its children (bash's time
# keyword). Nothing but the fork, exec and run of CMD is inside the clock.
t_wall='' t_cpu=''
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
  read -r t_wall t_cpu < <(awk '{printf "%.1f %.1f\n", $1 * 1000, ($2 + $3) * 1000}' <<<"$t")
}

check_certbot() { # NAME WANT: nothing renewed, every lineage skipped
  local skipped
  grep -q 'No renewals were attempted' "$WORK/$1.out" || die "certbot attempted a renewal: $(head -c 2000 "$WORK/$1.out")"
  skipped=$(grep -c '(skipped)' "$WORK/$1.out" || true)
  [ "$skipped" -eq "$2" ] || die "certbot skipped $skipped lineages, not $2: $(head -c 2000 "$WORK/$1.err")"
}
check_dcvd() { # NAME WANT: every certificate in the state, no order started
  local line
  line=$(tail -n 1 "$WORK/$1.out")
  [[ $line == *"certificates=$2 "* && $line == *" live=$2 "* && $line == *" in_flight=0 "* ]] ||
    die "dcvd did not find all $2 certificates live and none due: $line"
}

# run_one TOOL DIR WANT FILE: one timed, checked run; appends "wall cpu" to FILE.
run_one() {
  local tool=$1 dir=$2 want=$3 file=$4 cmd
  "${tool}_cmd" "$dir"
  timed "$tool" "${cmd[@]}"
  "check_$tool" "$tool" "$want"
  if [ "$tool" = dcvd ]; then cat "$WORK/dcvd.out" >>"$WORK/$file.dcvdout"; fi
  printf '%s %s\n' "$t_wall" "$t_cpu" >>"$WORK/$file.$tool"
}

# pairs NAME COUNT DIR WANT: COUNT pairs, alternating which tool goes first;
# writes $WORK/NAME.pairs: "pair first cb_wall cb_cpu d_wall d_cpu load1".
pairs() {
  local name=$1 count=$2 dir=$3 want=$4 i first load
  : >"$WORK/$name.certbot"
  : >"$WORK/$name.dcvd"
  : >"$WORK/$name.dcvdout"
  : >"$WORK/$name.pairs"
  for ((i = 1; i <= count; i++)); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if ((i % 2)); then
      first=certbot
      run_one certbot "$dir" "$want" "$name"
      run_one dcvd "$dir" "$want" "$name"
    else
      first=dcvd
      run_one dcvd "$dir" "$want" "$name"
      run_one certbot "$dir" "$want" "$name"
    fi
    printf '%s %s %s %s %s\n' "$i" "$first" "$(tail -n 1 "$WORK/$name.certbot")" \
      "$(tail -n 1 "$WORK/$name.dcvd")" "$load" >>"$WORK/$name.pairs"
    log "$name pair $i/$count ($first first): $(tail -n 1 "$WORK/$name.pairs" | cut -d' ' -f3-6)"
  done
}

# median: the median of the numbers on stdin, one a line.
median() {
  sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
col() { awk -v c="$2" '{print $c}' "$WORK/$1"; } # FILE COLUMN
# ratios NAME: per pair, certbot/dcvd of wall and of cpu: "r_wall r_cpu".
ratios() { awk '{printf "%.2f %.2f\n", ($5 > 0 ? $3 / $5 : 0), ($6 > 0 ? $4 / $6 : 0)}' "$WORK/$1.pairs"; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s-%s", lo, hi}'; }

# --- warm-up and first runs (untimed in the pairs) ---------------------------------
log "probe: certbot renew over 1 lineage (checks --no-random-sleep-on-renew)"
certbot_cmd "$WORK/one"
"${cmd[@]}" >/dev/null 2>"$WORK/probe.err" </dev/null ||
  die "certbot renew --no-random-sleep-on-renew failed: $(head -c 2000 "$WORK/probe.err")"
log "dcvd: first runs (adopt the deploy directories' certificates), timed apart"
dcvd_cmd "$WORK/n"
timed dcvdfirst "${cmd[@]}"
check_dcvd dcvdfirst "$N"
first_wall=$t_wall first_cpu=$t_cpu
dcvd_cmd "$WORK/one"
timed dcvdfirst1 "${cmd[@]}"
check_dcvd dcvdfirst1 1
log "warm-up pair over $N (not counted)"
pairs warmup 1 "$WORK/n" "$N"

# --- the pairs --------------------------------------------------------------------
nproc=$(nproc)
load_before=$(cat /proc/loadavg)
start_utc=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
log "$PAIRS pairs over $N certificates"
pairs n "$PAIRS" "$WORK/n" "$N"
if ((FIXED_PAIRS > 0)); then
  log "$FIXED_PAIRS pairs over 1 certificate (fixed cost)"
  pairs one "$FIXED_PAIRS" "$WORK/one" 1
fi
load_after=$(cat /proc/loadavg)
end_utc=$(date -u '+%H:%M:%S UTC')

# --- summary ---------------------------------------------------------------------
# shellcheck disable=SC2016 # $D is printed as is: the directory
certbot_cmd '$D'
cb_line="${cmd[*]}"
# shellcheck disable=SC2016
dcvd_cmd '$D'
d_line="bench/sweep ${cmd[*]:1}"

inproc() { # FIELD: the median of a field of bench/sweep's own line over the pairs
  sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$WORK/n.dcvdout" | median
}

printf '\n== certbot %s renew / dcvd, whole processes, paired: N=%s certificates, none due\n' "$certbot_version" "$N"
printf '   %s to %s; nproc %s\n' "$start_utc" "$end_utc" "$nproc"
printf '   /proc/loadavg before: %s\n' "$load_before"
printf '   /proc/loadavg after:  %s\n' "$load_after"
printf '   inside the clock (fork to exit; wall, and user+sys CPU of the process and its children):\n'
printf '     certbot: %s\n' "$cb_line"
printf '     dcvd:    %s\n' "$d_line"
printf '              (dcvd has no one-shot command: bench/sweep starts as "dcvd run" does, runs its\n'
printf '               first renewal check over every certificate, and exits; see the header of this script)\n'

show_pairs() { # NAME WANT
  local name=$1 want=$2
  printf '\nPairs over %s certificate(s), ms (load1 = 1-minute load average when the pair started):\n' "$want"
  printf '  %4s %-7s %9s %8s %8s %7s %7s %7s %6s\n' pair first cb_wall cb_cpu d_wall d_cpu r_wall r_cpu load1
  paste -d' ' "$WORK/$name.pairs" <(ratios "$name") |
    awk '{printf "  %4s %-7s %9s %8s %8s %7s %6sx %6sx %6s\n", $1, $2, $3, $4, $5, $6, $8, $9, $7}'
  printf '  medians of %s pairs: certbot %s ms wall, %s ms CPU; dcvd %s ms wall, %s ms CPU\n' \
    "$(wc -l <"$WORK/$name.pairs")" "$(col "$name.pairs" 3 | median)" "$(col "$name.pairs" 4 | median)" \
    "$(col "$name.pairs" 5 | median)" "$(col "$name.pairs" 6 | median)"
  printf '  median of the per-pair ratios certbot/dcvd: CPU %sx (range %s), wall %sx (range %s)\n' \
    "$(ratios "$name" | awk '{print $2}' | median)" "$(ratios "$name" | awk '{print $2}' | range)" \
    "$(ratios "$name" | awk '{print $1}' | median)" "$(ratios "$name" | awk '{print $1}' | range)"
}
show_pairs n "$N"
printf '  dcvd by its own clock, inside the process (medians over the pairs): config %s ms, open %s ms,\n' \
  "$(inproc config_ms)" "$(inproc open_ms)"
printf '    first check %s ms, all in-process %s ms; the rest of the wall time is exec, Go runtime start-up, exit\n' \
  "$(inproc check_ms)" "$(inproc in_process_ms)"
printf '  dcvd first run over %s (adopts them all, once; not in the pairs): %s ms wall, %s ms CPU\n' "$N" "$first_wall" "$first_cpu"
if ((FIXED_PAIRS > 0)); then
  show_pairs one 1
  per() { # NAME_N NAME_1 COLUMN: (median over N - median over 1) / (N - 1)
    awk -v a="$(col n.pairs "$1" | median)" -v b="$(col one.pairs "$1" | median)" -v n="$((N - 1))" \
      'BEGIN {printf "%.3f", (a - b) / n}'
  }
  cb_per=$(per 4) d_per=$(per 6)
  printf '\nPer certificate beyond the fixed cost, CPU ms, derived from the medians above (not paired):\n'
  printf '  (median over %s - median over 1) / %s: certbot %s ms, dcvd %s ms, ratio %s\n' "$N" "$((N - 1))" \
    "$cb_per" "$d_per" "$(awk -v a="$cb_per" -v b="$d_per" 'BEGIN {if (a > 0 && b > 0) printf "%.0fx", a / b; else printf "-"}')"
fi
