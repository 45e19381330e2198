# Shared by the benchmark scripts (peers.sh, startup.sh, idle.sh): sourced, not run.
# Expects to be sourced from the repository root.

# Sets BIN to the binary to measure: BIN=path/to/bedrock-keyd if given (e.g. another
# profile), else the release build of this tree. With EVICT=1, drops the binary's
# cached pages first. A binary the linker (or cp, or a package manager) just wrote
# sits in the page cache in larger folios than the loader's readahead makes, and a
# page fault maps a whole folio: fewer faults, ~0.7 MiB more RSS. Dropping its pages
# (no root needed) measures it as read from disk, as after a reboot, and as the
# peers' python, node and dd were. (Written back first: only clean pages can be
# dropped.)
bench_binary() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/bedrock-keyd
  fi
  if [ "${EVICT:-0}" = 1 ]; then
    sync "$BIN" && dd if="$BIN" iflag=nocache count=0 status=none
  fi
}

# The documentation's example credentials: minting is offline, so no request is made.
# Instance metadata off, so nothing (not even a peer's SDK) probes the network.
example_credentials() {
  export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
  export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
  export AWS_EC2_METADATA_DISABLED=true
}

# Fails early, with what to install, when hyperfine or GNU time is missing.
need_timers() {
  command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }
  [ -x /usr/bin/time ] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }
}

# time_each DIR FORMAT CLEAN NAME...
# For each NAME, a key of the caller's associative array CMD: the wall time by
# hyperfine (RUNS runs after 3 warm-ups, into DIR/NAME.json), then RUNS runs under GNU
# time with -f FORMAT (one line per run, into DIR/NAME.time). The shell command CLEAN
# runs before every run, so each run creates its target afresh.
time_each() {
  local dir=$1 format=$2 clean=$3 name
  shift 3
  for name in "$@"; do
    hyperfine --runs "$RUNS" --warmup 3 -N --prepare "$clean" \
      --export-json "$dir/$name.json" "${CMD[$name]}" >/dev/null 2>&1
    : > "$dir/$name.time"
    for _ in $(seq "$RUNS"); do
      sh -c "$clean"
      # Word splitting of the command is intended: CMD holds plain argument lists.
      # shellcheck disable=SC2086
      /usr/bin/time -a -o "$dir/$name.time" -f "$format" ${CMD[$name]} >/dev/null 2>&1
    done
  done
}
