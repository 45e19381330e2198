#!/usr/bin/env bash
# End-to-end: the FROM scratch image under podman (runc), checking issue 7:
#   1. `podman run --read-only --network none IMAGE once` with env credentials writes a
#      key into a mounted directory, and `IMAGE status --file … --min-valid 5m` accepts
#      it (and `--min-valid 2h` rejects a 1 h key: the probe really looks)
#   2. a sidecar (`IMAGE run`, short lifetime) and an app container (another uid, same
#      group, like a pod's fsGroup) share the directory: the app sees the key rotate
#   3. `podman stop` (SIGTERM) makes the sidecar exit 0 and leaves a valid key
#
# Usage: packaging/e2e/podman.sh STATIC_BINARY      (root; podman, runc, busybox)
# STATIC_BINARY: x86_64-unknown-linux-musl build with `run`, `once`, `status`.
# To prove the harness before the daemon exists, E2E_STANDIN=1 runs the stand-in
# (python, with the host's /usr and /lib mounted read-only) instead of the image's
# entrypoint; minting still uses the real binary's `mint`:
#   E2E_STANDIN=1 packaging/e2e/podman.sh target/debug/bedrock-keyd
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(realpath "${1:?usage: podman.sh STATIC_BINARY}")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/packaging/container/containers.conf}"
tag=localhost/bedrock-keyd:e2e-$$ app=localhost/bedrock-keyd-e2e-app:$$
w="$(mktemp -d /var/tmp/bedrock-keyd-e2e.XXXXXX)"; chmod 0755 "$w"
cleanup() {
  podman rm -f -t 0 "sidecar-$$" "app-$$" >/dev/null 2>&1 || true
  podman rmi -f "$tag" "$app" >/dev/null 2>&1 || true
  rm -rf "$w"
}
trap cleanup EXIT
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$root/packaging/container/build.sh" "$bin" "$tag" >/dev/null
# The app: busybox from the build host in its own FROM scratch image (no registry).
mkdir "$w/app-ctx"; cp "$(command -v busybox)" "$w/app-ctx/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n' > "$w/app-ctx/Containerfile"
podman build --quiet --network none -t "$app" "$w/app-ctx" >/dev/null

# keys/: owned by the sidecar's uid/gid, group-traversable (a pod's fsGroup volume).
mkdir -m 0750 "$w/keys" "$w/conf"; chown 65532:65532 "$w/keys"; chmod 0755 "$w/conf"
config() {  # lifetime refresh_at min_remaining
  cat > "$w/conf/config.toml" <<TOML
[defaults]
region = "us-east-1"
lifetime = "$1"
refresh_at = $2
jitter = 0.0
min_remaining = "$3"

[[key]]
name = "default"

  [[key.sink]]
  type = "file"
  path = "/keys/bedrock.key"
  mode = "0640"
TOML
}

creds=(-e AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE -e AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
       -e AWS_EC2_METADATA_DISABLED=true)
vols=(-v "$w/keys:/keys" -v "$w/conf:/etc/bedrock-keyd:ro")
keyd=(--read-only --network none "${vols[@]}")
entry=("$tag")
probe=(/bedrock-keyd)      # what an exec probe runs inside the sidecar
if [ "${E2E_STANDIN:-0}" != 1 ] && [[ "$(ldd "$bin" 2>&1)" == *"=>"* ]]; then
  # Not static: lend the host's libc read-only (as packaging/check.sh does). Fine for
  # trying a debug build; the shipped image must be built from the musl binary.
  keyd+=(-v /lib:/lib:ro -v /lib64:/lib64:ro)
  echo "(dynamically linked binary: host /lib lent read-only; use the musl build for the real image)"
fi
if [ "${E2E_STANDIN:-0}" = 1 ]; then
  install -m 0755 "$bin" "$w/real-bedrock-keyd"
  install -m 0755 "$root/packaging/e2e/standin-daemon.py" "$w/standin.py"
  keyd+=(-v /usr:/usr:ro -v /lib:/lib:ro -v /lib64:/lib64:ro -v "$w/real-bedrock-keyd:/e2e/real:ro"
         -v "$w/standin.py:/e2e/standin.py:ro" -e BEDROCK_KEYD_REAL=/e2e/real --entrypoint /usr/bin/python3)
  entry=("$tag" /e2e/standin.py)
  probe=(/usr/bin/python3 /e2e/standin.py)
  echo "(stand-in mode: proving the harness, not the daemon)"
fi

# 1. once + status ---------------------------------------------------------------------
config 1h 0.5 5m
if podman run --rm "${keyd[@]}" "${creds[@]}" "${entry[@]}" once --config /etc/bedrock-keyd/config.toml; then
  [ -s "$w/keys/bedrock.key" ] && pass "once: key written to the mounted directory" || fail "once: no key file"
else
  fail "once exited $?"
fi
podman run --rm "${keyd[@]}" "${entry[@]}" status --file /keys/bedrock.key --min-valid 5m \
  && pass "status --min-valid 5m accepts it" || fail "status rejected a fresh key"
rc=0; podman run --rm "${keyd[@]}" "${entry[@]}" status --file /keys/bedrock.key --min-valid 2h || rc=$?
[ "$rc" = 3 ] && pass "status --min-valid 2h rejects a 1 h key (exit 3)" || fail "status --min-valid 2h exited $rc, want 3"

# 2. sidecar + app: rotation seen by the app -------------------------------------------
rm -f "$w/keys/bedrock.key"
config 20s 0.25 5s          # re-mint every ~5 s
podman run -d --name "sidecar-$$" "${keyd[@]}" "${creds[@]}" "${entry[@]}" run --config /etc/bedrock-keyd/config.toml >/dev/null
for _ in $(seq 50); do [ -s "$w/keys/bedrock.key" ] && break; sleep 0.2; done
# Another uid in the sidecar's group, read-only mount: what a pod's app container gets.
podman run --rm --name "app-$$" --read-only --network none --user 65533:65532 \
  -v "$w/keys:/keys:ro" "$app" sh -c \
  'for i in $(seq 14); do md5sum /keys/bedrock.key | cut -c1-12; sleep 1; done' > "$w/seen" || true
seen="$(sort -u "$w/seen" | grep -c . || true)"
[ "$seen" -ge 2 ] && pass "app container saw $seen distinct keys in 14 s (rotation through the shared directory)" \
  || fail "app saw $seen distinct key(s): $(tr '\n' ' ' < "$w/seen")"
podman exec "sidecar-$$" "${probe[@]}" status --file /keys/bedrock.key --min-valid 5s \
  && pass "exec probe in the running sidecar: status accepts the key" \
  || fail "exec probe status in the running sidecar failed"

# 3. SIGTERM: clean exit, complete key --------------------------------------------------
podman stop -t 10 "sidecar-$$" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "sidecar-$$")"
[ "$code" = 0 ] && pass "podman stop: sidecar exited 0" || fail "podman stop: sidecar exited $code"
podman run --rm "${keyd[@]}" "${entry[@]}" status --file /keys/bedrock.key --min-valid 1s \
  && pass "after stop: key file complete and valid" || fail "after stop: key file invalid"
ls "$w/keys" | grep -v '^bedrock.key$' | grep -q . && fail "stray files left in keys/: $(ls "$w/keys")" \
  || pass "no temp files left in keys/"

[ $fails -eq 0 ] && echo "podman e2e: all passed" || { echo "podman e2e: $fails failed"; podman logs "sidecar-$$" 2>&1 | tail -n 20; }
exit $((fails > 0))
