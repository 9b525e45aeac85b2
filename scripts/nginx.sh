#!/usr/bin/env bash
# A real nginx for the end-to-end tests of HTTP file DCV (internal/e2e), on
# 127.0.0.1 and spare ports, never on port 80, with three servers:
#   - the site: DIR/webroot, /.well-known/pki-validation/ as static
#     text/plain files (DCVD_TEST_NGINX_ADDR, DCVD_TEST_NGINX_WEBROOT);
#   - a "force https" server that redirects every request to https, which
#     breaks HTTP DCV since the CA follows no redirect
#     (DCVD_TEST_NGINX_REDIRECT_ADDR);
#   - a site that proxies /.well-known/pki-validation/ to dcvd's built-in
#     responder, as the README shows, with the Host header kept
#     (DCVD_TEST_NGINX_PROXY_ADDR); the responder is the test's to start on
#     DCVD_TEST_NGINX_UPSTREAM_ADDR, a port that was free at start;
#   - a TLS site serving DIR/tls/fullchain.pem and DIR/tls/privkey.pem, the
#     deploy directory of the daemon's end-to-end test
#     (DCVD_TEST_NGINX_TLS_ADDR, DCVD_TEST_NGINX_TLS_DIR); start puts a
#     throw-away self-signed pair there so that nginx can start, and
#     DCVD_TEST_NGINX_RELOAD is the exact command that makes this nginx read
#     the files again (nginx -s reload with this instance's configuration).
#
#   scripts/nginx.sh install     install Debian's nginx if missing, without
#                                starting the distro's service; an nginx
#                                already running (on port 80) is left alone
#   scripts/nginx.sh start DIR   write DIR/nginx/nginx.conf, start nginx,
#                                wait until it serves DIR/webroot and write
#                                DIR/env (exported variables)
#   scripts/nginx.sh stop DIR    stop the nginx started in DIR
#
# The tests read DIR/env:  set -a; . DIR/env; set +a; go test ./internal/e2e/
# Without those variables the end-to-end tests skip with a reason.
#
# Who reads the webroot matters (certbot#9920: a challenge file the web
# server's user cannot read is a 403 to the CA). Started as root, nginx runs
# its workers as an unprivileged user (nobody:nogroup), exactly like a
# packaged nginx running as www-data: a DCV file is served only if it is
# world-readable and every directory above it is world-traversable, which is
# what the tests prove (a 0644 file in 0755 directories is served, a 0600
# one is refused). For that, start chmods DIR and DIR/webroot to 0755 and
# refuses to continue when a parent of DIR is not traversable by that user
# (mktemp -d under /tmp is fine: /tmp is 1777). Started as another user,
# nginx cannot switch users and its workers run as that user; DIR/env then
# says so (DCVD_TEST_NGINX_WORKER_UID) and the test that needs a different
# worker user skips.
set -euo pipefail

readonly PORT_BASE=18080
readonly REDIRECT_PORT_BASE=18090
readonly PROXY_PORT_BASE=18100
readonly UPSTREAM_PORT_BASE=18110
readonly TLS_PORT_BASE=18120
readonly START_TIMEOUT=30 # seconds to wait for nginx to answer
# The worker user when started as root: unprivileged, owns nothing in DIR.
readonly WORKER_USER=nobody

log() { printf 'nginx: %s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: scripts/nginx.sh install
       scripts/nginx.sh start DIR
       scripts/nginx.sh stop DIR
EOF
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: run 'scripts/nginx.sh install' first"
}

nginx_bin() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && printf '/usr/sbin/nginx\n'; }
}

installed() {
  nginx_bin >/dev/null && command -v curl >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 &&
    command -v openssl >/dev/null 2>&1
}

# cmd_install installs only what is missing and starts, stops or restarts
# no service: an nginx that already serves this machine's sites keeps
# serving, and the test nginx takes other ports with its own pid file
# (see lib-servers.sh).
cmd_install() {
  if installed; then
    log "nginx already installed ($(nginx_bin))"
    return 0
  fi
  # nginx-light is the smallest build with the static and rewrite modules
  # (Debian 12); newer releases only have nginx. Either one installed is
  # enough.
  apt_install /tmp/nginx-apt.log "nginx-light|nginx" curl iproute2 openssl ca-certificates
  installed || die "packages installed but nginx, curl, ss or openssl is still missing"
  log "installed $(nginx_bin)"
}

# port_busy, free_port, alive, stop_pid, apt_install
# shellcheck source=scripts/lib-servers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-servers.sh"

# die, over lib-servers.sh's: the message and the tail of every log under
# $DIR and DIR/nginx, because an nginx that failed to start says why only
# there; and a start that failed half-way is undone.
die() {
  log "error: $*"
  if [ -n "${DIR:-}" ] && [ -d "$DIR" ]; then
    print_logs "$DIR"/*.log "$DIR"/nginx/*.log
  fi
  # A start that failed half-way leaves nothing running.
  if [ -n "${STARTING:-}" ]; then
    STARTING=""
    cmd_stop
  fi
  exit 1
}

cmd_stop() {
  stop_pid "$DIR/nginx.pid" nginx
}

# http_code URL [HOST] prints the status code of a GET (000 when nothing
# answers).
http_code() {
  local h=()
  [ -n "${2:-}" ] && h=(-H "Host: $2")
  # -k: the TLS site serves whatever certificate its test deployed last.
  curl -ksS -o /dev/null -m 2 --noproxy '*' "${h[@]}" -w '%{http_code}' "$1" 2>/dev/null || true
}

# running_and_answering succeeds when the nginx of a previous start in DIR
# still runs and answers on both ports, so that a second start changes
# nothing.
running_and_answering() {
  [ -f "$DIR/env" ] && alive "$DIR/nginx.pid" || return 1
  (
    set +u
    # shellcheck disable=SC1091
    . "$DIR/env"
    [ "$(http_code "http://$DCVD_TEST_NGINX_ADDR/dcvd-nginx-probe.txt")" = 200 ] &&
      [ "$(http_code "http://$DCVD_TEST_NGINX_REDIRECT_ADDR/")" = 301 ] &&
      [ "$(http_code "http://$DCVD_TEST_NGINX_PROXY_ADDR/")" = 301 ] &&
      [ -n "${DCVD_TEST_NGINX_TLS_ADDR:-}" ] &&
      [ "$(http_code "https://$DCVD_TEST_NGINX_TLS_ADDR/dcvd-nginx-probe.txt")" = 200 ]
  ) >/dev/null 2>&1
}

# worker_uid prints the uid of one worker of the nginx master whose pid is
# given, read from /proc (the user directive is ignored when not root, so
# this is the truth, not the configuration).
worker_uid() {
  local master=$1 st ppid uid
  for st in /proc/[0-9]*/status; do
    ppid=$(awk '/^PPid:/ {print $2}' "$st" 2>/dev/null) || continue
    [ "$ppid" = "$master" ] || continue
    uid=$(awk '/^Uid:/ {print $2}' "$st" 2>/dev/null) || continue
    [ -n "$uid" ] && { printf '%s\n' "$uid"; return 0; }
  done
  return 1
}

# untraversable prints the directories from / down to $1 that others (the
# worker user) cannot search.
untraversable() {
  local d=$1 out=()
  while :; do
    if [ -d "$d" ] && [ $(( 8#$(stat -c '%a' "$d") & 1 )) -eq 0 ]; then
      out+=("$d ($(stat -c '%A %U' "$d"))")
    fi
    [ "$d" = / ] && break
    d=$(dirname "$d")
  done
  printf '%s\n' "${out[@]}"
}

cmd_start() {
  need curl
  need ss
  need openssl
  local bin
  bin=$(nginx_bin) || die "nginx not found: run 'scripts/nginx.sh install' first"
  case "$DIR" in
    *[!A-Za-z0-9._/-]*) die "DIR $DIR has characters nginx's configuration would misread; use [A-Za-z0-9._/-] only" ;;
  esac
  if running_and_answering; then
    log "already running in $DIR (env: $DIR/env)"
    return 0
  fi
  cmd_stop # a half-started previous run
  rm -f "$DIR/env" "$DIR"/*.log

  local n="$DIR/nginx" web="$DIR/webroot" tls="$DIR/tls" user_line="" port rport pport uport tport
  mkdir -p "$n/tmp" "$web" "$tls"
  # The worker user reads the webroot through DIR: both must be searchable
  # by others, whatever umask or mktemp -d (0700) made them.
  chmod 0755 "$DIR" "$web"
  printf 'dcvd nginx probe\n' >"$web/dcvd-nginx-probe.txt"
  chmod 0644 "$web/dcvd-nginx-probe.txt"
  # The TLS site's files: a throw-away self-signed pair, only so that nginx
  # starts; the end-to-end test deploys the real certificate over it. What
  # an earlier start's test deployed is dropped with its kept generation,
  # so every start begins from the same state. nginx's master reads the key
  # (as root when started as root), its workers never do.
  chmod 0755 "$tls"
  rm -rf "$tls/previous" "$tls/cert.pem" "$tls/chain.pem" "$tls/fullchain.pem" "$tls/privkey.pem"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=dcvd-nginx-placeholder" \
      -keyout "$tls/privkey.pem.new" -out "$tls/fullchain.pem.new"
  ) >"$DIR/openssl.log" 2>&1 || die "openssl could not make the placeholder certificate in $tls"
  chmod 0600 "$tls/privkey.pem.new"
  chmod 0644 "$tls/fullchain.pem.new"
  mv "$tls/privkey.pem.new" "$tls/privkey.pem"
  mv "$tls/fullchain.pem.new" "$tls/fullchain.pem"
  if [ "$(id -u)" -eq 0 ]; then
    local group
    group=$(id -gn "$WORKER_USER" 2>/dev/null) || die "user $WORKER_USER does not exist; nginx workers need an unprivileged user"
    user_line="user $WORKER_USER $group;"
  fi

  port=$(free_port "$PORT_BASE")
  rport=$(free_port "$REDIRECT_PORT_BASE" "$port")
  pport=$(free_port "$PROXY_PORT_BASE" "$port" "$rport")
  uport=$(free_port "$UPSTREAM_PORT_BASE" "$port" "$rport" "$pport")
  tport=$(free_port "$TLS_PORT_BASE" "$port" "$rport" "$pport" "$uport")

  # Everything nginx writes (pid, logs, temp files) stays under DIR/nginx;
  # nothing of /etc/nginx is included, so the distro's sites never load.
  # "types {}" makes every file in pki-validation text/plain whatever its
  # extension, as the CA expects.
  cat >"$n/nginx.conf" <<EOF
# Written by scripts/nginx.sh for dcvd's end-to-end tests.
$user_line
worker_processes 1;
daemon off;
pid "$n/nginx.pid";
error_log "$n/error.log" notice;
events {
	worker_connections 64;
}
http {
	access_log "$n/access.log";
	client_body_temp_path "$n/tmp/client_body";
	proxy_temp_path "$n/tmp/proxy";
	fastcgi_temp_path "$n/tmp/fastcgi";
	uwsgi_temp_path "$n/tmp/uwsgi";
	scgi_temp_path "$n/tmp/scgi";
	server_tokens off;
	default_type application/octet-stream;

	# The site: a document root, served for any Host.
	server {
		listen 127.0.0.1:$port default_server;
		server_name _;
		root "$web";

		location ^~ /.well-known/pki-validation/ {
			types { }
			default_type text/plain;
			try_files \$uri =404;
		}
		location / {
			try_files \$uri =404;
		}
	}

	# A site whose plain-http server sends everything to https: the
	# misconfiguration that makes HTTP DCV fail.
	server {
		listen 127.0.0.1:$rport default_server;
		server_name _;
		location / {
			return 301 https://\$host\$request_uri;
		}
	}

	# A site with no webroot for DCV: the validation path goes to dcvd's
	# responder, which picks the file by Host, hence proxy_set_header (by
	# default nginx would send the upstream's address as Host).
	server {
		listen 127.0.0.1:$pport default_server;
		server_name _;
		location ^~ /.well-known/pki-validation/ {
			proxy_pass http://127.0.0.1:$uport;
			proxy_set_header Host \$host;
		}
		location / {
			return 301 https://\$host\$request_uri;
		}
	}

	# The TLS site: whatever certificate is in $tls, read at start and at
	# each reload, for any server name.
	server {
		listen 127.0.0.1:$tport ssl default_server;
		server_name _;
		ssl_certificate "$tls/fullchain.pem";
		ssl_certificate_key "$tls/privkey.pem";
		root "$web";
		location / {
			try_files \$uri =404;
		}
	}
}
EOF
  # -e: the error log before the configuration is read (the compiled-in
  # /var/log/nginx may not be writable); -p: the prefix for relative paths.
  "$bin" -t -q -p "$n/" -e "$n/error.log" -c "$n/nginx.conf" >"$DIR/nginx-check.log" 2>&1 ||
    die "nginx -t rejected $n/nginx.conf"
  STARTING=1
  nohup "$bin" -p "$n/" -e "$n/error.log" -c "$n/nginx.conf" >"$DIR/nginx.log" 2>&1 </dev/null &
  echo $! >"$DIR/nginx.pid"

  local _ code="" rcode="" pcode="" tcode=""
  for _ in $(seq 1 $((START_TIMEOUT * 5))); do
    code=$(http_code "http://127.0.0.1:$port/dcvd-nginx-probe.txt")
    rcode=$(http_code "http://127.0.0.1:$rport/")
    pcode=$(http_code "http://127.0.0.1:$pport/")
    tcode=$(http_code "https://127.0.0.1:$tport/dcvd-nginx-probe.txt")
    [ "$code" != 000 ] && [ "$rcode" != 000 ] && [ "$pcode" != 000 ] && [ "$tcode" != 000 ] && break
    alive "$DIR/nginx.pid" || die "nginx exited during start-up"
    sleep 0.2
  done
  [ "$code" != 000 ] || die "nginx on 127.0.0.1:$port did not answer within ${START_TIMEOUT}s"
  [ "$rcode" != 000 ] || die "nginx on 127.0.0.1:$rport did not answer within ${START_TIMEOUT}s"
  [ "$pcode" != 000 ] || die "nginx on 127.0.0.1:$pport did not answer within ${START_TIMEOUT}s"
  [ "$tcode" != 000 ] || die "nginx on https://127.0.0.1:$tport did not answer within ${START_TIMEOUT}s"
  if [ "$code" != 200 ]; then
    # The probe file is there: a 403 or 404 means the worker user cannot
    # reach it (try_files reports an unsearchable directory as 404).
    local bad
    bad=$(untraversable "$web")
    [ -z "$bad" ] || die "nginx's workers cannot read $web (HTTP $code for the probe file); not searchable by others: ${bad//$'\n'/, }"
    die "nginx on 127.0.0.1:$port answered HTTP $code for $web/dcvd-nginx-probe.txt, want 200"
  fi
  [ "$rcode" = 301 ] || die "nginx on 127.0.0.1:$rport answered HTTP $rcode, want a 301 redirect"
  [ "$pcode" = 301 ] || die "nginx on 127.0.0.1:$pport answered HTTP $pcode for /, want a 301 redirect"
  [ "$tcode" = 200 ] || die "nginx on https://127.0.0.1:$tport answered HTTP $tcode for the probe file, want 200"

  # The reload command the tests give dcvd, proven once here: it must
  # reach this nginx (its pid file, its configuration) and leave it serving.
  # DIR's characters are checked above, so single quotes need no escaping.
  local reload="$bin -s reload -p $n/ -e $n/error.log -c $n/nginx.conf"
  $reload >"$DIR/nginx-reload.log" 2>&1 || die "the reload command failed: $reload"
  tcode=""
  for _ in $(seq 1 $((START_TIMEOUT * 5))); do
    tcode=$(http_code "https://127.0.0.1:$tport/dcvd-nginx-probe.txt")
    [ "$tcode" = 200 ] && break
    alive "$DIR/nginx.pid" || die "nginx exited after a reload"
    sleep 0.2
  done
  [ "$tcode" = 200 ] || die "nginx on https://127.0.0.1:$tport answered HTTP $tcode after a reload, want 200"

  local uid
  uid=$(worker_uid "$(cat "$DIR/nginx.pid")") || die "no nginx worker process found under pid $(cat "$DIR/nginx.pid")"

  cat >"$DIR/env.tmp" <<EOF
# Written by scripts/nginx.sh start; load with: set -a; . $DIR/env; set +a
export DCVD_TEST_NGINX_ADDR=127.0.0.1:$port
export DCVD_TEST_NGINX_WEBROOT=$web
export DCVD_TEST_NGINX_REDIRECT_ADDR=127.0.0.1:$rport
export DCVD_TEST_NGINX_PROXY_ADDR=127.0.0.1:$pport
export DCVD_TEST_NGINX_UPSTREAM_ADDR=127.0.0.1:$uport
export DCVD_TEST_NGINX_WORKER_UID=$uid
export DCVD_TEST_NGINX_TLS_ADDR=127.0.0.1:$tport
export DCVD_TEST_NGINX_TLS_DIR=$tls
export DCVD_TEST_NGINX_RELOAD='$reload'
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  STARTING=""
  log "nginx serving $web on 127.0.0.1:$port (workers uid $uid), redirecting on 127.0.0.1:$rport, proxying to 127.0.0.1:$uport on 127.0.0.1:$pport, TLS from $tls on 127.0.0.1:$tport; env in $DIR/env"
}

servers_main "$@"
