#!/usr/bin/env bash
# `bedrock-keyd token` as a credential helper pays it: a key served from a file sink
# (the fast path: no credentials, no runtime, nothing written), next to
#
#   cat of the same file          the floor: what a helper that only reads costs
#   bedrock-keyd --version        starting this binary, no work
#   token, cold                   the slow path: mint, write the sink, print
#   Python generator              the official aws-bedrock-token-generator minting one
#                                 key and printing it (what a helper script would run)
#
# Targets (issue 16): token from the sink <= 2x cat; >= 30x faster than Python.
#
#   benches/token.sh              # RUNS=40 runs each; medians
#   EVICT=1 benches/token.sh      # the binary read from disk first (benches/common.sh)
#   BIN=path/to/bedrock-keyd benches/token.sh
#   PYTHON=/path/to/python benches/token.sh   # a Python that has the generator already
#
# Timing: hyperfine (Debian: hyperfine) when installed, else a shell loop timed with
# date +%s%N (coarser: it includes the loop's own fork). Needs python3; installs the
# generator into target/peers/venv (as benches/peers.sh does) unless PYTHON is given.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
. benches/common.sh
bench_binary
WORK=target/token
OUT=$PWD/$WORK/out
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  [ -x target/peers/venv/bin/python ] || python3 -m venv target/peers/venv
  target/peers/venv/bin/pip install -q --disable-pip-version-check 'aws-bedrock-token-generator==1.1.0'
  PYTHON=target/peers/venv/bin/python
fi

example_credentials
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# The sink holds a key valid for 12 h: every `token` run below is served from it.
"$BIN" once --lifetime 12h --file "$OUT/k.key" >/dev/null 2>&1

NAMES=(cat version token python token-cold)
declare -A CMD=(
  [cat]="cat $OUT/k.key"
  [version]="$BIN --version"
  [token]="$BIN token --file $OUT/k.key"
  [python]="$PYTHON benches/peers/python_token.py"
  [token-cold]="$BIN token --file $OUT/cold.key"
)
# Only the cold run starts without its sink; the others must find theirs.
declare -A PREPARE=([token-cold]="rm -f $OUT/cold.key")

echo "machine: $(nproc) cores, $(uname -r); binary $(stat -c %s "$BIN") bytes; load $(cut -d' ' -f1-3 /proc/loadavg)"
TIMER=loop
command -v hyperfine >/dev/null && TIMER=hyperfine
if [ "$TIMER" = hyperfine ]; then
  echo "timer: hyperfine, $RUNS runs after 3 warm-ups"
  for n in "${NAMES[@]}"; do
    hyperfine --runs "$RUNS" --warmup 3 -N --prepare "${PREPARE[$n]:-true}" \
      --export-json "$WORK/$n.json" "${CMD[$n]}" >/dev/null 2>&1
  done
else
  echo "timer: shell loop (hyperfine not installed), $RUNS runs"
  for n in "${NAMES[@]}"; do
    : > "$WORK/$n.ns"
    for _ in $(seq "$RUNS"); do
      sh -c "${PREPARE[$n]:-true}"
      start=$(date +%s%N)
      # shellcheck disable=SC2086
      ${CMD[$n]} >/dev/null 2>&1
      echo $(( $(date +%s%N) - start )) >> "$WORK/$n.ns"
    done
  done
fi

python3 - "$WORK" "$TIMER" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, timer, names = sys.argv[1], sys.argv[2], sys.argv[3:]
def median_ms(n):
    if timer == "hyperfine":
        return json.load(open(f"{work}/{n}.json"))["results"][0]["median"] * 1000
    return statistics.median(int(l) for l in open(f"{work}/{n}.ns") if l.strip()) / 1e6
rows = {n: median_ms(n) for n in names}
labels = {"cat": "cat (floor)", "version": "bedrock-keyd --version", "token": "token, from the file sink",
          "python": "Python generator, one key", "token-cold": "token, cold (mint + write)"}
print(f"{'command':<30}{'median wall':>13}{'÷ cat':>8}{'÷ token':>9}")
for n in names:
    print(f"{labels[n]:<30}{rows[n]:>10.2f} ms{rows[n]/rows['cat']:>7.1f}×{rows[n]/rows['token']:>8.1f}×")
print()
print(f"token from the sink ÷ cat: {rows['token']/rows['cat']:.2f}× (target ≤ 2×); "
      f"Python ÷ token: {rows['python']/rows['token']:.0f}× (target ≥ 30×)")
PY
