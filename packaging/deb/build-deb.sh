#!/usr/bin/env bash
# Build bedrock-keyd_VERSION-1_ARCH.deb from a prebuilt binary with dpkg-deb.
# Usage: packaging/deb/build-deb.sh BINARY OUTDIR
#
# Why dpkg-deb from a staged tree rather than cargo-deb: it packages any prebuilt
# binary (glibc or static musl) without compiling anything, so CI needs no
# `cargo install cargo-deb` (~1 min of CPU per fresh machine); maintainer scripts,
# conffiles and permissions are spelled out here instead of generated. Both tools
# produce the same kind of archive; lintian is the judge.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="${1:?usage: build-deb.sh BINARY OUTDIR}"
outdir="${2:?usage: build-deb.sh BINARY OUTDIR}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)-1"
arch="${DEB_ARCH:-$(dpkg --print-architecture)}"
# Debian 12 still ships units in /lib/systemd/system (lintian 2.116 expects it);
# set UNITDIR=/usr/lib/systemd/system for Debian 13+.
unitdir="${UNITDIR:-/lib/systemd/system}"
# /etc/bedrock-keyd/config.toml is the minimal config that works with the hardened
# unit as shipped (one file sink under /run/bedrock-keyd). The annotated
# packaging/config.example.toml (every field; sinks in /etc/myapp, keyrings, notify
# targets that do not exist on a fresh host) goes to the examples instead.
config="$root/packaging/deb-config.toml"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
d="$stage/pkg"
# Directories 0755 and files 0644 unless said otherwise, all owned by root
# (dpkg-deb --root-owner-group), whatever the umask of the caller.
umask 022

install -D -m 0755 "$binary" "$d/usr/bin/bedrock-keyd"
# Packages ship stripped binaries (lintian: unstripped-binary-or-object); a no-op
# for a release build (profile.release strip = true).
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$d/usr/bin/bedrock-keyd"
install -D -m 0644 "$root/systemd/bedrock-keyd.service" "$d$unitdir/bedrock-keyd.service"
install -D -m 0644 "$root/systemd/bedrock-keyd@.service" "$d$unitdir/bedrock-keyd@.service"
install -D -m 0644 "$root/systemd/user/bedrock-keyd.service" "$d/usr/lib/systemd/user/bedrock-keyd.service"
install -D -m 0644 "$root/systemd/bedrock-keyd.sysusers" "$d/usr/lib/sysusers.d/bedrock-keyd.conf"
# Root-owned, world-readable: the config holds no secret (profiles, ARNs, paths).
install -D -m 0644 "$config" "$d/etc/bedrock-keyd/config.toml"
install -d -m 0755 "$d/usr/share/man/man1"
gzip -9n < "$root/packaging/man/bedrock-keyd.1" > "$d/usr/share/man/man1/bedrock-keyd.1.gz"
doc="$d/usr/share/doc/bedrock-keyd"
install -D -m 0644 "$here/copyright" "$doc/copyright"
gzip -9n < "$here/changelog" > "$doc/changelog.Debian.gz"
install -m 0644 "$here/README.Debian" "$doc/README.Debian"
install -D -m 0644 "$root/systemd/examples/myapp.service.d/bedrock-keyd.conf" \
  "$doc/examples/myapp.service.d/bedrock-keyd.conf"
install -m 0644 "$root/systemd/examples/myapp.toml" "$doc/examples/myapp.toml"
install -m 0644 "$root/systemd/examples/polkit/50-bedrock-keyd.rules" "$doc/examples/50-bedrock-keyd.rules"
if [ -f "$root/packaging/config.example.toml" ]; then
  install -m 0644 "$root/packaging/config.example.toml" "$doc/examples/config.example.toml"
fi
install -D -m 0644 "$here/lintian-overrides" "$d/usr/share/lintian/overrides/bedrock-keyd"

# ${shlibs:Depends} for this binary (empty for a static musl build).
shlibs=""
if ldd "$binary" >/dev/null 2>&1; then
  mkdir -p "$stage/src/debian"
  printf 'Source: bedrock-keyd\n\nPackage: bedrock-keyd\nArchitecture: any\n' > "$stage/src/debian/control"
  shlibs="$(cd "$stage/src" && dpkg-shlibdeps -O "$d/usr/bin/bedrock-keyd" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
fi
# init-system-helpers: deb-systemd-helper/-invoke in the maintainer scripts.
depends="init-system-helpers (>= 1.52)${shlibs:+, $shlibs}"

install -d -m 0755 "$d/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$d" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" "$here/control.in" > "$d/DEBIAN/control"
echo /etc/bedrock-keyd/config.toml > "$d/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$d/DEBIAN/$s"; done
(cd "$d" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
  > "$d/DEBIAN/md5sums"
chmod 0644 "$d/DEBIAN/md5sums" "$d/DEBIAN/conffiles" "$d/DEBIAN/control"

mkdir -p "$outdir"
deb="$outdir/bedrock-keyd_${version}_${arch}.deb"
# xz for distribution; DEB_COMPRESS=gzip in CI, where xz of a 20 MB binary costs ~25 s.
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$d" "$deb" >/dev/null
echo "$deb"
