#!/usr/bin/env bash
# Real DNS servers for the integration tests of package providers: BIND9
# (RFC 2136 updates signed with TSIG, AXFR) and PowerDNS Authoritative (HTTP
# API), both on 127.0.0.1 and spare ports, never on port 53.
#
#   scripts/dns-servers.sh install     install the Debian packages if missing;
#                                      a named or pdns already running (the
#                                      distro's, on port 53) is left alone
#   scripts/dns-servers.sh start DIR   write configs under DIR, start both
#                                      servers, wait until they answer and
#                                      write DIR/env (exported variables)
#   scripts/dns-servers.sh stop DIR    stop the servers started in DIR
#
# The tests read DIR/env:  set -a; . DIR/env; set +a; go test ./providers/
# Without those variables the integration tests skip with a reason.
set -euo pipefail

readonly PACKAGES=(bind9 bind9-utils bind9-dnsutils pdns-server pdns-backend-sqlite3 sqlite3)
readonly BIND_ZONE=bind.dcvd.test
readonly PDNS_ZONE=pdns.dcvd.test
readonly TSIG_NAME=dcvd-test-key
readonly TSIG_ALG=hmac-sha256
# Default first ports; each is checked and the next free one is taken.
readonly BIND_PORT_BASE=53530
readonly PDNS_PORT_BASE=53540
readonly PDNS_API_PORT_BASE=58081
readonly START_TIMEOUT=30 # seconds to wait for each server to answer

log() { printf 'dns-servers: %s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: scripts/dns-servers.sh install
       scripts/dns-servers.sh start DIR
       scripts/dns-servers.sh stop DIR
EOF
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: run 'scripts/dns-servers.sh install' first"
}

# Debian ships the sqlite schema plain in 12; older packages gzipped it.
pdns_schema() {
  local d=/usr/share/doc/pdns-backend-sqlite3 f
  for f in "$d/schema.sqlite3.sql" "$d/schema.sqlite3.sql.gz" \
    /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql; do
    if [ -f "$f" ]; then
      printf '%s\n' "$f"
      return 0
    fi
  done
  return 1
}

installed() {
  local c
  for c in named named-checkconf tsig-keygen dig pdns_server pdnsutil sqlite3 curl; do
    command -v "$c" >/dev/null 2>&1 || return 1
  done
  [ -f /usr/lib/x86_64-linux-gnu/pdns/libgsqlite3backend.so ] ||
    compgen -G '/usr/lib/*/pdns/libgsqlite3backend.so' >/dev/null || return 1
  pdns_schema >/dev/null
}

# cmd_install installs only what is missing and starts, stops or restarts
# no service: a named or PowerDNS that already serves this machine keeps
# serving, and the test servers take other ports (see lib-servers.sh).
cmd_install() {
  if installed; then
    log "packages already installed"
    return 0
  fi
  apt_install /tmp/dns-servers-apt.log "${PACKAGES[@]}" curl ca-certificates
  installed || die "packages installed but a command or the gsqlite3 backend is still missing"
  log "installed"
}

# die, port_busy, free_port, alive, wait_up, stop_pid, apt_install, random_hex
# shellcheck source=scripts/lib-servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-servers.sh"

cmd_stop() {
  stop_pid "$DIR/bind.pid" named
  stop_pid "$DIR/pdns.pid" pdns_server
}

# running_and_answering succeeds when both servers of a previous start in
# DIR still run and answer, so that a second start changes nothing.
running_and_answering() {
  [ -f "$DIR/env" ] && alive "$DIR/bind.pid" && alive "$DIR/pdns.pid" || return 1
  (
    set +u
    # shellcheck disable=SC1091
    . "$DIR/env"
    dig +short +time=1 +tries=1 -p "${DCVD_TEST_BIND_ADDR##*:}" @127.0.0.1 SOA "$DCVD_TEST_BIND_ZONE" | grep -q . &&
      dig +short +time=1 +tries=1 -p "${DCVD_TEST_PDNS_ADDR##*:}" @127.0.0.1 SOA "$DCVD_TEST_PDNS_ZONE" | grep -q . &&
      curl -fsS -o /dev/null -H "X-API-Key: $DCVD_TEST_PDNS_API_KEY" "$DCVD_TEST_PDNS_API_URL/api/v1/servers/localhost"
  ) >/dev/null 2>&1
}

wait_for() {
  local what=$1 pidfile=$2
  shift 2
  wait_up "$pidfile" "$what" "$@" || die "$what did not answer within ${START_TIMEOUT}s"
  log "$what answers"
}

soa_answers() { # port zone
  dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 SOA "$2" | grep -q .
}

random_b64() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }

start_bind() {
  local port=$1 secret=$2 b="$DIR/bind"
  mkdir -p "$b/zones"
  cat >"$b/named.conf" <<EOF
// Written by scripts/dns-servers.sh for dcvd's integration tests.
options {
	directory "$b";
	pid-file "$b/named.pid";
	// Not the default /run/named/named.lock: that lock belongs to the
	// distro's named, and a named that cannot take it refuses to start.
	lock-file "$b/named.lock";
	session-keyfile "$b/session.key";
	managed-keys-directory "$b";
	listen-on port $port { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { 127.0.0.0/8; };
	querylog no;
};
controls { };
key "$TSIG_NAME" {
	algorithm $TSIG_ALG;
	secret "$secret";
};
zone "$BIND_ZONE" {
	type primary;
	file "$b/zones/$BIND_ZONE.db";
	allow-update { key "$TSIG_NAME"; };
	allow-transfer { key "$TSIG_NAME"; };
};
EOF
  # Unrelated records (www, a TXT, a CNAME) make "cleanup leaves the zone as
  # it was" meaningful.
  cat >"$b/zones/$BIND_ZONE.db" <<EOF
\$TTL 300
@	IN SOA	ns1.$BIND_ZONE. hostmaster.$BIND_ZONE. ( 2024010101 60 60 86400 60 )
	IN NS	ns1.$BIND_ZONE.
ns1	IN A	127.0.0.1
www	IN A	127.0.0.2
info	IN TXT	"dcvd integration test zone"
alias	IN CNAME	www.$BIND_ZONE.
EOF
  rm -f "$b/zones/$BIND_ZONE.db.jnl"
  named-checkconf "$b/named.conf" >"$DIR/bind-check.log" 2>&1 || die "named-checkconf rejected $b/named.conf"
  named-checkzone "$BIND_ZONE" "$b/zones/$BIND_ZONE.db" >>"$DIR/bind-check.log" 2>&1 ||
    die "named-checkzone rejected the zone file"
  # As root named keeps root without -u, which is what lets it write the
  # journal in DIR; -u only makes sense with a user that owns DIR.
  nohup named -4 -g -c "$b/named.conf" >"$DIR/bind.log" 2>&1 </dev/null &
  echo $! >"$DIR/bind.pid"
  wait_for "BIND9 on 127.0.0.1:$port" "$DIR/bind.pid" soa_answers "$port" "$BIND_ZONE"
}

start_pdns() {
  local port=$1 api_port=$2 api_key=$3 p="$DIR/pdns" schema
  mkdir -p "$p"
  schema=$(pdns_schema) || die "PowerDNS sqlite schema not found under /usr/share/doc/pdns-backend-sqlite3"
  rm -f "$p/pdns.sqlite3"
  case "$schema" in
    *.gz) zcat "$schema" | sqlite3 "$p/pdns.sqlite3" ;;
    *) sqlite3 "$p/pdns.sqlite3" <"$schema" ;;
  esac
  # Caches off: the tests query right after each API change.
  cat >"$p/pdns.conf" <<EOF
# Written by scripts/dns-servers.sh for dcvd's integration tests.
launch=gsqlite3
gsqlite3-database=$p/pdns.sqlite3
local-address=127.0.0.1
local-port=$port
socket-dir=$p
api=yes
api-key=$api_key
webserver=yes
webserver-address=127.0.0.1
webserver-port=$api_port
webserver-allow-from=127.0.0.0/8
default-soa-content=ns1.@ hostmaster.@ 1 10800 3600 604800 3600
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
disable-syslog=yes
loglevel=4
EOF
  chmod 600 "$p/pdns.conf"
  local pu=(pdnsutil --config-dir="$p")
  {
    "${pu[@]}" create-zone "$PDNS_ZONE" "ns1.$PDNS_ZONE"
    "${pu[@]}" add-record "$PDNS_ZONE" ns1 A 300 127.0.0.1
    "${pu[@]}" add-record "$PDNS_ZONE" www A 300 127.0.0.2
    "${pu[@]}" add-record "$PDNS_ZONE" info TXT 300 '"dcvd integration test zone"'
    "${pu[@]}" add-record "$PDNS_ZONE" alias CNAME 300 "www.$PDNS_ZONE."
  } >"$DIR/pdnsutil.log" 2>&1 || die "pdnsutil could not create zone $PDNS_ZONE"
  nohup pdns_server --daemon=no --guardian=no --config-dir="$p" >"$DIR/pdns.log" 2>&1 </dev/null &
  echo $! >"$DIR/pdns.pid"
  wait_for "PowerDNS on 127.0.0.1:$port" "$DIR/pdns.pid" soa_answers "$port" "$PDNS_ZONE"
  wait_for "PowerDNS API on 127.0.0.1:$api_port" "$DIR/pdns.pid" \
    curl -fsS -o /dev/null -H "X-API-Key: $api_key" \
    "http://127.0.0.1:$api_port/api/v1/servers/localhost/zones/$PDNS_ZONE."
}

cmd_start() {
  local c
  for c in named named-checkconf named-checkzone dig pdns_server pdnsutil sqlite3 curl; do need "$c"; done
  mkdir -p "$DIR"
  if running_and_answering; then
    log "already running in $DIR (env: $DIR/env)"
    return 0
  fi
  cmd_stop # a half-started previous run
  rm -f "$DIR/env" "$DIR"/*.log

  local bind_port pdns_port api_port secret api_key
  bind_port=$(free_port "$BIND_PORT_BASE")
  pdns_port=$(free_port "$PDNS_PORT_BASE" "$bind_port")
  api_port=$(free_port "$PDNS_API_PORT_BASE" "$bind_port" "$pdns_port")
  if command -v tsig-keygen >/dev/null 2>&1; then
    secret=$(tsig-keygen -a "$TSIG_ALG" "$TSIG_NAME" | sed -n 's/.*secret "\(.*\)";.*/\1/p')
  fi
  [ -n "${secret:-}" ] || secret=$(random_b64)
  api_key=$(random_hex)

  start_bind "$bind_port" "$secret"
  start_pdns "$pdns_port" "$api_port" "$api_key"

  umask 077
  cat >"$DIR/env.tmp" <<EOF
# Written by scripts/dns-servers.sh start; load with: set -a; . $DIR/env; set +a
export DCVD_TEST_BIND_ADDR=127.0.0.1:$bind_port
export DCVD_TEST_BIND_ZONE=$BIND_ZONE.
export DCVD_TEST_BIND_TSIG_NAME=$TSIG_NAME.
export DCVD_TEST_BIND_TSIG_ALG=$TSIG_ALG
export DCVD_TEST_BIND_TSIG_SECRET=$secret
export DCVD_TEST_PDNS_ADDR=127.0.0.1:$pdns_port
export DCVD_TEST_PDNS_API_URL=http://127.0.0.1:$api_port
export DCVD_TEST_PDNS_API_KEY=$api_key
export DCVD_TEST_PDNS_ZONE=$PDNS_ZONE.
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  log "BIND9 on 127.0.0.1:$bind_port, PowerDNS on 127.0.0.1:$pdns_port (API on :$api_port); env in $DIR/env"
}

servers_main "$@"
