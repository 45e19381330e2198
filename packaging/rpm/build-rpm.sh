#!/usr/bin/env bash
# Build bedrock-keyd-VERSION-1.ARCH.rpm from a prebuilt binary with rpmbuild.
# Usage: packaging/rpm/build-rpm.sh BINARY OUTDIR
# Works with Debian's `rpm` package (rpmbuild 4.18) as well as on Fedora/RHEL; uses
# rpmbuild + a spec instead of cargo-generate-rpm, whose `cargo install` costs ~3 min.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$(realpath "${1:?usage: build-rpm.sh BINARY OUTDIR}")"
outdir="${2:?usage: build-rpm.sh BINARY OUTDIR}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
extra=()
# Debian's rpm runs brp-compress with /bin/sh = dash, which lacks `read -d`: the man
# page would stay uncompressed (with an error message). Run it with bash there.
if [ "$(readlink -f /bin/sh)" != "$(readlink -f /bin/bash)" ] && [ -x /usr/lib/rpm/brp-compress ]; then
  extra+=(--define "__brp_compress bash /usr/lib/rpm/brp-compress %{?_prefix}")
fi
top="$(mktemp -d)"
trap 'rm -rf "$top"' EXIT
rpmbuild -bb --quiet \
  --define "_topdir $top" \
  --define "_sourcedir $root" \
  --define "bin_path $binary" \
  --define "pkg_version $version" \
  "${extra[@]}" \
  "$here/bedrock-keyd.spec" >&2
mkdir -p "$outdir"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$outdir/" \; -printf "$outdir/%f\n"
