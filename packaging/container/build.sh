#!/usr/bin/env bash
# Stage a minimal build context and build the FROM scratch image with podman.
# Usage: packaging/container/build.sh BINARY [IMAGE_TAG]
#   BINARY     a static bedrock-keyd (x86_64-unknown-linux-musl); a dynamically linked
#              binary builds too but cannot run in the image (no libc): warned below.
#   IMAGE_TAG  default localhost/bedrock-keyd:dev
# CONTAINERS_CONF defaults to the containers.conf next to this script (runc, ulimits).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:?usage: build.sh BINARY [IMAGE_TAG]}"
tag="${2:-localhost/bedrock-keyd:dev}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

[ -x "$binary" ] || { echo "build.sh: $binary is not an executable file" >&2; exit 2; }
[ -s "$ca" ] || { echo "build.sh: no CA bundle at $ca (apt-get install ca-certificates)" >&2; exit 2; }
if [[ "$(ldd "$binary" 2>&1)" == *"=>"* ]]; then
  echo "build.sh: warning: $binary is dynamically linked; the image will build but not run" >&2
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$binary" "$ctx/bedrock-keyd"
cp "$ca" "$ctx/ca-certificates.crt"
cp "$here/Containerfile" "$ctx/Containerfile"
podman build --quiet --network none --file "$ctx/Containerfile" --tag "$tag" "$ctx"
