#!/usr/bin/env bash
# Builds dcvd_VERSION_ARCH.deb with Debian's own tools (dpkg-deb; no
# debhelper, so that it builds on any machine with Go and dpkg):
#   scripts/deb.sh [OUTDIR]          (default: the repository's root)
# The version is $DCVD_VERSION, else the latest v* tag (git describe), else
# 0.0.0+gitDATE.COMMIT. The binary has it stamped (dcvd --version prints
# it); the package holds the systemd units from systemd/ (not enabled),
# the sysusers.d and tmpfiles.d files, the example configuration in
# /usr/share/doc/dcvd/examples/ and the docs. Its postinst makes the dcvd
# user and directories and never starts the service.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}

for tool in go dpkg-deb dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "deb.sh: $tool is missing (apt-get install dpkg-dev for dpkg-deb)" >&2
    exit 1
  fi
done

version=${DCVD_VERSION:-}
if [ -z "$version" ]; then
  if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    # v1.2.3-4-gabcdef → 1.2.3+4.gabcdef: after 1.2.3, as Debian orders.
    version=$(sed -e 's/^v//' -e 's/-\([0-9]*\)-g/+\1.g/' <<<"$tag")
  else
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    version="0.0.0+git$(date -u +%Y%m%d).$commit"
  fi
fi
# Debian versions start with a digit and hold only these characters.
if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "deb.sh: version $version is not a Debian version" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)
goarch=$arch
[ "$arch" = i386 ] && goarch=386

root=$(mktemp -d /tmp/dcvd-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT
umask 022
chmod 0755 "$root" # mktemp made it 0700: it becomes the package's /

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
  "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/usr/share/doc/dcvd/examples"

# A static binary (no cgo): it depends on no library version of the host.
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath \
  -ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/dcvd" ./cmd/dcvd

# The units name the paths of scripts/install.sh's default prefix
# (/usr/local); a package lives in /usr.
for unit in systemd/*.service systemd/*.path; do
  sed -e 's|/usr/local/bin/dcvd|/usr/bin/dcvd|g' -e 's|/usr/local/share/doc/dcvd|/usr/share/doc/dcvd|g' \
    "$unit" >"$root/usr/lib/systemd/system/$(basename "$unit")"
done
install -m 0644 systemd/dcvd.sysusers.conf "$root/usr/lib/sysusers.d/dcvd.conf"
install -m 0644 systemd/dcvd.tmpfiles.conf "$root/usr/lib/tmpfiles.d/dcvd.conf"

doc=$root/usr/share/doc/dcvd
install -m 0644 README.md README.zh-CN.md "$doc/"
install -m 0644 systemd/README.md "$doc/systemd.md"
install -m 0644 config.example.toml "$doc/examples/config.toml"
install -m 0644 packaging/debian/copyright "$doc/copyright"
printf 'dcvd (%s) unstable; urgency=medium\n\n  * Built from the dcvd repository.\n\n -- dcvd developers <dcvd@users.noreply.github.com>  %s\n' \
  "$version" "$(date -u -R)" | gzip -9n >"$doc/changelog.Debian.gz"

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control.in >"$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/dcvd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
