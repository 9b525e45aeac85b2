#!/usr/bin/env bash
# Installs dcvd as a systemd service: the binary, the unit files, the dcvd
# user (sysusers.d), its directories (tmpfiles.d) and, only when there is
# none yet, /etc/dcvd/config.toml from config.example.toml. Run it again to
# upgrade: binary, units and snippets are replaced, an existing config.toml
# never is. It neither enables nor starts the service: the configuration
# needs your API key and certificates first (the next steps are printed).
#
#   scripts/install.sh [--binary PATH] [--prefix DIR] [--destdir DIR] [--dry-run]
#
#   --binary PATH   install this prebuilt dcvd instead of building one
#                   (building needs Go: CGO_ENABLED=0 go build ./cmd/dcvd)
#   --prefix DIR    where binary, units and snippets go (default /usr/local:
#                   DIR/bin/dcvd, DIR/lib/systemd/system/, DIR/lib/sysusers.d/,
#                   DIR/lib/tmpfiles.d/, DIR/share/doc/dcvd/); the paths in
#                   the units (ExecStart=) follow it
#   --destdir DIR   stage everything under DIR (for packages and tests), also
#                   read from $DESTDIR: nothing outside DIR is touched, no user
#                   is created, no owner is set and no systemctl runs
#   --dry-run       print what would be done, change nothing
#
# Without --destdir it must run as root (building runs as the user given by
# $SUDO_USER when started through sudo, so that the Go cache stays theirs).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

die() { echo "install.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=""
prefix="/usr/local"
destdir="${DESTDIR:-}"
dry_run=false

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --dry-run|-n) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

case "$prefix" in
  /*) prefix=${prefix%/}; [ -n "$prefix" ] || die "--prefix / is not supported: use /usr" ;;
  *) die "--prefix must be an absolute path, not $prefix" ;;
esac
# The prefix ends up in the units through sed: keep it to plain path
# characters rather than escaping.
case "$prefix" in
  *[!A-Za-z0-9/._-]*) die "--prefix may only contain letters, digits, /, ., _ and -: $prefix" ;;
esac
if [ -n "$destdir" ]; then
  case "$destdir" in
    /*) ;;
    *) destdir="$(pwd)/$destdir" ;;
  esac
  destdir=${destdir%/}
  [ -n "$destdir" ] || die "--destdir / is the real system: leave --destdir out instead"
fi

bindir="$prefix/bin"
unitdir="$prefix/lib/systemd/system"
sysusersdir="$prefix/lib/sysusers.d"
tmpfilesdir="$prefix/lib/tmpfiles.d"
docdir="$prefix/share/doc/dcvd"
confdir="/etc/dcvd"
config="$confdir/config.toml"
units="dcvd.service dcvd-reload-nginx.path dcvd-reload-nginx.service"

for f in $units dcvd.sysusers.conf dcvd.tmpfiles.conf; do
  [ -f "$repo/systemd/$f" ] || die "missing $repo/systemd/$f: run the script from a dcvd source tree"
done
[ -f "$repo/config.example.toml" ] || die "missing $repo/config.example.toml"

if [ -z "$destdir" ] && ! $dry_run && [ "$(id -u)" -ne 0 ]; then
  die "run as root to install into the system, or give --destdir DIR to stage into a directory"
fi

# run prints a command, then runs it unless this is a dry run.
run() {
  echo "+ $*"
  if ! $dry_run; then
    "$@"
  fi
}

systemd_running() { [ -d /run/systemd/system ]; }

workdir=$(mktemp -d "${TMPDIR:-/tmp}/dcvd-install.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# --- The binary ----------------------------------------------------------------
if [ -n "$binary" ]; then
  if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    die "--binary $binary is not an executable file"
  fi
else
  version=${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)}
  binary="$workdir/dcvd"
  # Static (no cgo): the pure-Go DNS resolver needs no AF_NETLINK socket,
  # which the unit's RestrictAddressFamilies= does not allow, and the binary
  # runs the same on every distribution.
  build=(env CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o "$binary" ./cmd/dcvd)
  if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    if ! $dry_run; then
      chmod 0755 "$workdir"
    fi
    build=(runuser -u "$SUDO_USER" -- "${build[@]}")
  fi
  if ! $dry_run && [ -z "${SUDO_USER:-}" ] && ! command -v go >/dev/null 2>&1; then
    die "go is not in PATH: install Go, or build elsewhere and give --binary PATH"
  fi
  echo "+ (cd $repo && $(printf '%q ' "${build[@]}"))"
  if ! $dry_run; then
    (cd "$repo" && "${build[@]}") || die "building dcvd failed"
  fi
fi

# --- Files ---------------------------------------------------------------------
run install -d -m 0755 "$destdir$bindir" "$destdir$unitdir" "$destdir$sysusersdir" \
  "$destdir$tmpfilesdir" "$destdir$docdir"
run install -m 0755 "$binary" "$destdir$bindir/dcvd"
for u in $units; do
  src="$repo/systemd/$u"
  if [ "$prefix" != /usr/local ]; then
    echo "+ sed 's|/usr/local/|$prefix/|g' $src > $workdir/$u"
    if ! $dry_run; then
      sed "s|/usr/local/|$prefix/|g" "$src" >"$workdir/$u"
    fi
    src="$workdir/$u"
  fi
  run install -m 0644 "$src" "$destdir$unitdir/$u"
done
run install -m 0644 "$repo/systemd/dcvd.sysusers.conf" "$destdir$sysusersdir/dcvd.conf"
run install -m 0644 "$repo/systemd/dcvd.tmpfiles.conf" "$destdir$tmpfilesdir/dcvd.conf"
# Always the current example, beside the config it may be newer than.
run install -m 0644 "$repo/config.example.toml" "$destdir$docdir/config.example.toml"
run install -m 0644 "$repo/systemd/README.md" "$destdir$docdir/systemd.md"

# --- User and directories (on the real system only) ----------------------------
if [ -z "$destdir" ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    run systemd-sysusers "$sysusersdir/dcvd.conf"
  elif ! getent passwd dcvd >/dev/null; then
    run useradd --system --user-group --home-dir /var/lib/dcvd --no-create-home \
      --shell /usr/sbin/nologin --comment "dcvd certificate daemon" dcvd
  fi
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    run systemd-tmpfiles --create "$tmpfilesdir/dcvd.conf"
  else
    run install -d -m 0750 -o root -g dcvd "$confdir"
    run install -d -m 0700 -o dcvd -g dcvd /var/lib/dcvd
    run install -d -m 0750 -o dcvd -g dcvd /etc/ssl/dcvd
  fi
else
  run install -d -m 0750 "$destdir$confdir"
fi

# --- The configuration, never overwritten --------------------------------------
new_config=false
if [ -e "$destdir$config" ] || [ -L "$destdir$config" ]; then
  echo "  keeping $destdir$config (compare it with $docdir/config.example.toml for new keys)"
else
  new_config=true
  if [ -z "$destdir" ]; then
    run install -m 0640 -o root -g dcvd "$repo/config.example.toml" "$config"
  else
    # No owner in a staging directory: the package sets root:dcvd.
    run install -m 0640 "$repo/config.example.toml" "$destdir$config"
  fi
fi

if [ -z "$destdir" ] && systemd_running; then
  run systemctl daemon-reload
fi

# --- Next steps ----------------------------------------------------------------
if $dry_run; then
  echo
  echo "Dry run: nothing was changed."
  exit 0
fi
if [ -n "$destdir" ]; then
  echo
  echo "Staged under $destdir. The package must own $confdir and $config as root:dcvd (0750, 0640),"
  echo "and create the user and directories by running, after install:"
  echo "  systemd-sysusers $sysusersdir/dcvd.conf && systemd-tmpfiles --create $tmpfilesdir/dcvd.conf"
  exit 0
fi

active=false
if systemd_running && systemctl is-active --quiet dcvd.service; then
  active=true
fi
cat <<EOF

dcvd is installed: $bindir/dcvd, $unitdir/dcvd.service.
EOF
if $active; then
  cat <<EOF
The service is running the previous binary: restart it to run this one.
  systemctl restart dcvd
EOF
  exit 0
fi
$new_config && echo "A new $config was written from the example: it does nothing useful until you edit it."
cat <<EOF

Next steps:
  1. Edit $config: the [api] key pair, your [dns.*] providers and [[certificate]]s.
     Secret files must be readable by dcvd, which runs as user dcvd: either group-readable
       install -m 0640 -o root -g dcvd /dev/stdin $confdir/api-secret    # paste, then Ctrl-D
     or root's alone, passed as a credential (systemd/README.md, "Credentials"):
       install -m 0600 /dev/stdin $confdir/api-secret
       systemctl edit dcvd    # [Service] LoadCredential=api-secret:$confdir/api-secret
     and in config.toml: access_key_secret_file = "\${CREDENTIALS_DIRECTORY}/api-secret"
  2. Each webroot, and each deploy.dir outside /etc/ssl/dcvd, must be writable in the sandbox:
       systemctl edit dcvd    # [Service] ReadWritePaths=/var/www/shop
  3. Reloading a web server needs privileges dcvd does not have: leave "reload" unset and
       systemctl edit dcvd-reload-nginx.path     # one PathChanged= per cert.pem
       systemctl enable --now dcvd-reload-nginx.path
     (or a polkit rule: see $docdir/systemd.md).
  4. Check as the service will run (its user, ReadWritePaths=, capabilities, credentials,
     reload command; each problem names its key and the fix), then start:
       $bindir/dcvd check-config --as-service --config $config
       systemctl enable --now dcvd
       systemctl status dcvd; journalctl -u dcvd -f
     Commands you run as root (dcvd status, dcvd reissue) act as user dcvd in /var/lib/dcvd:
     they never leave files there the service cannot open.
EOF
