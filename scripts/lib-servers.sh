# Shell functions shared by the scripts that run test servers
# (dns-servers.sh, nginx.sh, postgres.sh). Sourced after the script defines
# log, die, usage and its cmd_ functions.
# shellcheck shell=bash

# port_busy PORT: something listens on PORT (TCP or UDP).
port_busy() {
  local p=$1
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltnu "sport = :$p" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
  fi
}

# free_port BASE [TAKEN...] prints the first port from BASE on that nothing
# listens on (TCP or UDP) and that is not among TAKEN.
free_port() {
  local p=$1 end=$(($1 + 200)) t ok
  shift
  while [ "$p" -lt "$end" ]; do
    ok=1
    for t in "$@"; do [ "$p" = "$t" ] && ok=""; done
    if [ -n "$ok" ] && ! port_busy "$p"; then
      printf '%s\n' "$p"
      return 0
    fi
    p=$((p + 1))
  done
  die "no free port in $1..$end"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid stops the process whose id is in the pid file, if it is still the
# program we started (a reused pid is left alone).
stop_pid() {
  local pidfile=$1 prog=$2 pid _
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$prog" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$prog (pid $pid) did not stop in 10s; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped $prog (pid $pid)"
  fi
  rm -f "$pidfile"
}

# print_logs FILE...: the last 40 lines of each file that exists, because a
# server that failed to start says why only in its log.
print_logs() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    printf -- '----- %s (last 40 lines) -----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# servers_main "$@": the command line every server script shares —
# install, start DIR, stop DIR — dispatched to cmd_install, cmd_start and
# cmd_stop with DIR made absolute.
servers_main() {
  [ $# -ge 1 ] || usage
  case "$1" in
    install)
      [ $# -eq 1 ] || usage
      cmd_install
      ;;
    start | stop)
      if [ $# -ne 2 ] || [ -z "$2" ]; then usage; fi
      mkdir -p "$2"
      # shellcheck disable=SC2034 # read by the cmd_ functions of the caller
      DIR=$(cd "$2" && pwd)
      "cmd_$1"
      ;;
    *) usage ;;
  esac
}
