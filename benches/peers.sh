#!/usr/bin/env bash
# Side-by-side: the same job (mint one key from environment credentials, write it
# atomically to a file) done by `bedrock-keyd once`, the official Python generator,
# the official JS generator, and `dd conv=fsync` of the same bytes as the floor.
# Reports median wall time (hyperfine), median CPU time and peak RSS (GNU time),
# and the ratios, from one run.
#
#   benches/peers.sh                # builds the release binary, sets up the peers
#   RUNS=30 benches/peers.sh        # more runs
#   EVICT=1 benches/peers.sh        # bedrock-keyd read from disk, like the peers' binaries
#   BIN=path/to/bedrock-keyd benches/peers.sh   # a binary built elsewhere
#
# Needs: hyperfine and GNU time (Debian: hyperfine, time), python3, node/npm. It
# installs the generators into target/peers (a venv and node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
WORK=target/peers
mkdir -p "$WORK"
. benches/common.sh
need_timers
bench_binary
[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check 'aws-bedrock-token-generator==1.1.0'
if [ ! -d "$WORK/node_modules/@aws/bedrock-token-generator" ]; then
  (cd "$WORK" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund '@aws/bedrock-token-generator@1.1.0')
fi
cp benches/peers/js_once.js "$WORK/js_once.js"

example_credentials
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
OUT=$PWD/$WORK/out
mkdir -p "$OUT"
"$BIN" once --lifetime 12h --file "$OUT/floor.bytes" >/dev/null 2>&1

declare -A CMD=(
  [floor-dd]="dd if=$OUT/floor.bytes of=$OUT/dd.key conv=fsync status=none"
  [bedrock-keyd]="$BIN once --lifetime 12h --file $OUT/keyd.key"
  [python]="$WORK/venv/bin/python benches/peers/python_once.py $OUT/py.key"
  [js]="node $WORK/js_once.js $OUT/js.key"
)
ORDER=(floor-dd bedrock-keyd python js)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "runs per command: $RUNS"
# Each run starts without the targets: every tool really writes (bedrock-keyd writes
# nothing when the file already holds the same key, which within one second it would).
time_each "$WORK" "%U %S %M" "rm -f $OUT/dd.key $OUT/keyd.key $OUT/py.key $OUT/js.key" "${ORDER[@]}"

python3 - "$WORK" "${ORDER[@]}" <<'PY'
import json, statistics, sys
work, names = sys.argv[1], sys.argv[2:]
rows = {}
for n in names:
    h = json.load(open(f"{work}/{n}.json"))["results"][0]
    t = [tuple(map(float, l.split())) for l in open(f"{work}/{n}.time") if l.strip()]
    rows[n] = dict(wall=h["median"] * 1000, cpu=statistics.median(u + s for u, s, _ in t) * 1000,
                   rss=statistics.median(m for _, _, m in t) / 1024)
floor, keyd = rows["floor-dd"]["wall"], rows["bedrock-keyd"]["wall"]
print(f"{'command':<14}{'median wall':>13}{'median CPU':>12}{'peak RSS':>11}{'wall ÷ floor':>14}{'wall ÷ keyd':>12}")
for n in names:
    r = rows[n]
    print(f"{n:<14}{r['wall']:>10.2f} ms{r['cpu']:>9.0f} ms{r['rss']:>7.1f} MiB{r['wall']/floor:>13.1f}×{r['wall']/keyd:>11.1f}×")
print()
print(f"bedrock-keyd vs floor: {keyd/floor:.2f}× (target ≤ 2×); Python ÷ bedrock-keyd: "
      f"{rows['python']['wall']/keyd:.1f}× (target ≥ 30×); JS ÷ bedrock-keyd: {rows['js']['wall']/keyd:.1f}×; "
      f"bedrock-keyd peak RSS {rows['bedrock-keyd']['rss']:.1f} MiB (target ≤ 8 MiB)")
PY
