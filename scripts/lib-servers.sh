# Shell functions shared by the scripts that run test servers
# (dns-servers.sh, nginx.sh, postgres.sh). Sourced after the script defines
# log, usage and its cmd_ functions; it defines die, which a script that
# needs more of it defines again after sourcing this file.
# shellcheck shell=bash

# The rule every server script keeps: the test servers are private
# instances on spare loopback ports, with their configuration, pid files,
# sockets and state under DIR. Nothing here stops, restarts or signals a
# process these scripts did not start, nor changes how a service that was
# installed before starts, because on a real server
# the distro's nginx, named or PowerDNS may be serving sites (issue 14):
# a packaged server that holds a port only makes free_port take the next
# one, and the only processes ever signalled are the ones whose pid a
# start wrote to its own pid file under DIR (stop_pid). The package tests
# in internal/scriptsafety check this, with decoy servers on :53 and :80.

# die prints the message and the tail of every log under $DIR, because a
# server that failed to start says why only there.
die() {
  log "error: $*"
  if [ -n "${DIR:-}" ] && [ -d "$DIR" ]; then
    print_logs "$DIR"/*.log
  fi
  exit 1
}

# pkg_installed PKG: dpkg has PKG installed.
pkg_installed() {
  local st
  st=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [[ $st == *" installed" ]]
}

# installed_set prints every installed package, one a line, sorted: the
# set before and after an install tells which packages it added.
installed_set() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null |
    awk '$1 == "ii" { print $2 }' | sort -u
}

# apt_install LOG PKG... installs those of PKG that are not installed yet;
# an entry "a|b" is satisfied by either and installs the first the archive
# has. Packages already installed are not named to apt-get, so a server the
# admin runs is neither upgraded nor restarted. policy-rc.d (exit 101)
# keeps the new packages' services from starting during the install; an
# existing policy (as in containers) is the admin's and is left alone.
# After it, new units the packages enabled for boot are turned off
# (disable_new_units): a test rig must not bring up a public server at
# the next boot either.
apt_install() {
  local logf=$1 want=() entry alt found
  shift
  for entry in "$@"; do
    found=""
    for alt in ${entry//|/ }; do
      pkg_installed "$alt" && found=1
    done
    [ -n "$found" ] || want+=("$entry")
  done
  [ "${#want[@]}" -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || die "installing packages needs root (apt-get install ${want[*]})"

  local policy=/usr/sbin/policy-rc.d ours="" before rc=0 pkgs=()
  before=$(installed_set)
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
    # Also on die or an interrupt: a policy left behind would keep every
    # later install on this machine from starting its services.
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -f '$policy'" EXIT
  fi
  apt-get update -qq >"$logf" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    for entry in "${want[@]}"; do
      found=""
      for alt in ${entry//|/ }; do
        if [ -z "$found" ] && apt-cache show --no-all-versions "$alt" >/dev/null 2>&1; then
          found=$alt
        fi
      done
      pkgs+=("${found:-${entry%%|*}}")
    done
    log "installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${pkgs[@]}" >>"$logf" 2>&1 || rc=$?
  fi
  if [ -n "$ours" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$logf" >&2
    die "apt-get failed (exit $rc), full log in $logf"
  fi
  disable_new_units "$before"
}

# disable_new_units BEFORE (an installed_set) turns off the boot start of
# the systemd units shipped by the packages installed since BEFORE, which
# their postinst enabled. It never stops anything (no --now) and skips any
# unit that is running: that one was started by someone else, and whoever
# did wants it.
disable_new_units() {
  local before=$1 pkg unit units=()
  command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] || return 0
  while read -r pkg; do
    while read -r unit; do
      units+=("${unit##*/}")
    done < <(dpkg-query -L "$pkg" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/@]+\.(service|socket)$' || true)
  done < <(comm -13 <(printf '%s\n' "$before") <(installed_set))
  for unit in "${units[@]}"; do
    systemctl is-active --quiet "$unit" && continue
    systemctl is-enabled --quiet "$unit" 2>/dev/null || continue
    log "$unit came with the install: not started, and now not started at boot either"
    systemctl disable --quiet "$unit" >/dev/null 2>&1 || true
  done
}

# port_busy PORT: something listens on PORT (TCP or UDP), or a TCP socket
# in any other state has it as its local port: a server without
# SO_REUSEADDR (PowerDNS) cannot bind a port with a connection still in
# TIME-WAIT, which a previous test server leaves for a minute.
port_busy() {
  local p=$1
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hantu "sport = :$p" 2>/dev/null)" ]
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

# wait_up PIDFILE WHAT CMD... waits up to START_TIMEOUT seconds until CMD
# succeeds (its output discarded), and fails if it never does; it dies if
# the process of PIDFILE, WHAT, exits meanwhile.
wait_up() {
  local pidfile=$1 what=$2 _
  shift 2
  for _ in $(seq 1 $((START_TIMEOUT * 5))); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    alive "$pidfile" || die "$what exited during start-up"
    sleep 0.2
  done
  return 1
}

# random_hex prints 32 random hex digits.
random_hex() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

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
