#!/usr/bin/env bash
# A real PostgreSQL server for the integration tests of the PostgreSQL store
# (package daemon): a private cluster in DIR on 127.0.0.1 and a spare port,
# never the distro's cluster on 5432.
#
#   scripts/postgres.sh install     install the Debian packages if missing
#                                   (the distro's own cluster is not started)
#   scripts/postgres.sh start DIR   initdb into DIR, start the server, create
#                                   a database and a user with a random
#                                   password, wait until it answers and write
#                                   DIR/env (exported variables)
#   scripts/postgres.sh stop DIR    stop the server started in DIR
#   scripts/postgres.sh pause DIR   stop the server of DIR (fast shutdown) but
#                                   keep its data, port and DIR/env: a
#                                   database outage for the tests to survive
#   scripts/postgres.sh resume DIR  start the paused server of DIR again on
#                                   the same data and port, and wait until it
#                                   answers
#
# The tests read DIR/env:  set -a; . DIR/env; set +a; go test ./daemon/
# Without DCVD_TEST_POSTGRES_DSN the PostgreSQL tests skip with a reason.
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# "postgres" user the package creates, and DIR/data belongs to it.
set -euo pipefail

readonly PACKAGES=(postgresql postgresql-client)
readonly DB_NAME=dcvd_test
readonly DB_USER=dcvd_test
# Default first port; it is checked and the next free one is taken.
readonly PG_PORT_BASE=55432
readonly START_TIMEOUT=30 # seconds to wait for the server to answer

log() { printf 'postgres: %s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: scripts/postgres.sh install
       scripts/postgres.sh start DIR
       scripts/postgres.sh stop DIR
       scripts/postgres.sh pause DIR
       scripts/postgres.sh resume DIR
EOF
  exit 2
}

# pg_bindir prints the directory of the newest installed server's programs
# (Debian keeps initdb and pg_ctl there, off the PATH).
pg_bindir() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      best=$d # the glob sorts; versions of equal width sort as numbers
    fi
  done
  if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best=$(dirname "$(readlink -f "$(command -v initdb)")")
  fi
  [ -n "$best" ] || return 1
  printf '%s\n' "$best"
}

installed() {
  pg_bindir >/dev/null && command -v psql >/dev/null 2>&1
}

# cmd_install installs only what is missing and starts, stops or restarts
# no service: a PostgreSQL that already serves this machine (the distro's
# cluster on 5432) keeps serving, and the test cluster takes another port
# and its own socket directory (see lib-servers.sh).
cmd_install() {
  if installed; then
    log "packages already installed ($(pg_bindir))"
    return 0
  fi
  apt_install /tmp/postgres-apt.log "${PACKAGES[@]}"
  installed || die "packages installed but initdb, pg_ctl or psql is still missing"
  log "installed ($(pg_bindir))"
}

# die, port_busy, free_port, alive, wait_up, stop_pid, apt_install, random_hex
# shellcheck source=scripts/lib-servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-servers.sh"

# as_owner runs a command as the user that owns DIR/data: "postgres" when
# this script runs as root, else the current user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd_stop() {
  local bin
  if [ -f "$DIR/data/postmaster.pid" ] && bin=$(pg_bindir); then
    # A fast shutdown: the test data is thrown away anyway.
    as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >>"$DIR/stop.log" 2>&1 || true
  fi
  # If pg_ctl could not stop it, the pid file we wrote still names it.
  stop_pid "$DIR/postgres.pid" postgres
}

# answers succeeds when the server of DIR/env accepts the test user's login.
answers() {
  (
    set +u
    # shellcheck disable=SC1091
    . "$DIR/env"
    psql "$DCVD_TEST_POSTGRES_DSN" -XAtqc 'SELECT 1' | grep -qx 1
  ) >/dev/null 2>&1
}

running_and_answering() {
  [ -f "$DIR/env" ] && alive "$DIR/postgres.pid" && answers
}

# wait_answers waits until the server of DIR accepts the test user's login.
wait_answers() {
  wait_up "$DIR/postgres.pid" "the server" answers
}

cmd_start() {
  local bin
  bin=$(pg_bindir) || die "PostgreSQL not found: run 'scripts/postgres.sh install' first"
  command -v psql >/dev/null 2>&1 || die "psql not found: run 'scripts/postgres.sh install' first"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres user (the package creates it)"
    command -v runuser >/dev/null 2>&1 || die "runuser not found"
  fi
  mkdir -p "$DIR"
  if running_and_answering; then
    log "already running in $DIR (env: $DIR/env)"
    return 0
  fi
  cmd_stop # a half-started previous run
  rm -rf "$DIR/data" "$DIR/sock"
  rm -f "$DIR/env" "$DIR"/*.log

  local port password attempt tried=()
  password=$(random_hex)

  # The server's user must reach DIR to find its data; nothing secret is
  # kept outside data/ (0700) and env (0600).
  mkdir -p "$DIR/data" "$DIR/sock"
  chmod 755 "$DIR"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$DIR/data" "$DIR/sock"
  fi
  chmod 700 "$DIR/data"
  # Local (socket) logins of the server's own user need no password; every
  # TCP login needs a password (scram-sha-256).
  as_owner "$bin/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
    as_owner "$bin/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C >"$DIR/initdb.log" 2>&1 ||
    die "initdb failed"
  # fsync stays on: the store's durability is part of what is tested.
  cat >>"$DIR/data/postgresql.conf" <<EOF
# Written by scripts/postgres.sh for dcvd's integration tests.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
max_connections = 200
logging_collector = off
EOF
  # Tests start servers in parallel: between free_port's look and the
  # server's bind another may take the port. That is retried on another
  # port (the last port line of postgresql.conf wins); any other failure
  # is not. The first look starts at a random offset, so that parallel
  # starts seldom meet at all.
  for attempt in 1 2 3 4 5; do
    port=$(free_port "$((PG_PORT_BASE + RANDOM % 100))" "${tried[@]}")
    tried+=("$port")
    echo "port = $port" >>"$DIR/data/postgresql.conf"
    rm -f "$DIR/data/server.log"
    # pg_ctl detaches the server; its pid is the first line of postmaster.pid.
    if as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/data/server.log" -w -t "$START_TIMEOUT" start \
      >"$DIR/pg_ctl.log" 2>&1; then
      break
    fi
    cp "$DIR/data/server.log" "$DIR/server.log" 2>/dev/null || true
    if [ "$attempt" -lt 5 ] && grep -q 'could not bind\|could not create any TCP/IP sockets' "$DIR/server.log" 2>/dev/null; then
      log "port $port was taken before the server bound it; trying another"
      continue
    fi
    die "the server did not start within ${START_TIMEOUT}s"
  done
  head -n 1 "$DIR/data/postmaster.pid" >"$DIR/postgres.pid"

  # The password travels on stdin, never on a command line.
  as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$DIR/sock" -p "$port" -U postgres -d postgres \
    -v user="$DB_USER" -v db="$DB_NAME" -v pw="$password" >"$DIR/psql.log" 2>&1 <<'EOF' ||
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
EOF
    die "could not create the database and user"

  umask 077
  cat >"$DIR/env.tmp" <<EOF
# Written by scripts/postgres.sh start; load with: set -a; . $DIR/env; set +a
export DCVD_TEST_POSTGRES_DSN=postgres://$DB_USER:$password@127.0.0.1:$port/$DB_NAME?sslmode=disable
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  wait_answers || die "PostgreSQL on 127.0.0.1:$port did not accept $DB_USER within ${START_TIMEOUT}s"
  log "PostgreSQL on 127.0.0.1:$port, database $DB_NAME; env in $DIR/env"
}

# need_started sets bin (the caller's local) to the directory of the
# server's programs, and dies unless a server was started in DIR, running
# or paused.
need_started() {
  bin=$(pg_bindir) || die "PostgreSQL not found: run 'scripts/postgres.sh install' first"
  if [ ! -f "$DIR/env" ] || [ ! -d "$DIR/data" ]; then
    die "no server was started in $DIR (scripts/postgres.sh start $DIR)"
  fi
}

# cmd_pause stops the server as an outage would, but unlike stop it leaves
# everything resume needs: the data, the port in its configuration, DIR/env.
cmd_pause() {
  local bin
  need_started
  alive "$DIR/postgres.pid" || die "the server of $DIR is not running (paused already?)"
  # A fast shutdown: the clients' connections are cut, as by an outage.
  as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w -t "$START_TIMEOUT" stop >>"$DIR/pause.log" 2>&1 ||
    die "pg_ctl could not stop the server of $DIR"
  rm -f "$DIR/postgres.pid"
  log "paused the server of $DIR; resume with: scripts/postgres.sh resume $DIR"
}

# cmd_resume starts a paused server again: same data, so the same port,
# database, user and password, and DIR/env stays right.
cmd_resume() {
  local bin
  need_started
  if alive "$DIR/postgres.pid"; then
    die "the server of $DIR is running, not paused"
  fi
  as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/data/server.log" -w -t "$START_TIMEOUT" start \
    >"$DIR/pg_ctl.log" 2>&1 || {
    cp "$DIR/data/server.log" "$DIR/server.log" 2>/dev/null || true
    die "the server did not start again within ${START_TIMEOUT}s"
  }
  head -n 1 "$DIR/data/postmaster.pid" >"$DIR/postgres.pid"
  wait_answers || die "the resumed server of $DIR did not accept $DB_USER within ${START_TIMEOUT}s"
  log "resumed the server of $DIR"
}

# pause and resume are this script's own: the other server scripts have
# no use for them, so they are dispatched here, as servers_main does start
# and stop.
case "${1:-}" in
  pause | resume)
    if [ $# -ne 2 ] || [ -z "$2" ]; then usage; fi
    [ -d "$2" ] || die "no directory $2"
    DIR=$(cd "$2" && pwd)
    "cmd_$1"
    ;;
  *) servers_main "$@" ;;
esac
