#!/usr/bin/env bash
# Idle cost of `bedrock-keyd run`: RSS, CPU time and wake-ups (voluntary context
# switches) over an idle period, with 1 key and with 1,000 keys (distinct names and
# sink files); then 1,000 keys with short lifetimes, checking from the daemon's JSON
# log that every key was re-minted before its previous key expired.
#
#   benches/idle.sh                    # RUNS=10 runs of IDLE=60 seconds each
#   RUNS=20 IDLE=120 SHORT=180 benches/idle.sh
#   EVICT=1 benches/idle.sh            # the binary read from disk (see below)
#
# Each run is a fresh daemon; the summary line gives the median over the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-60}
RUNS=${RUNS:-10}
SHORT=${SHORT:-150}
# BIN=path/to/bedrock-keyd measures a binary built elsewhere; EVICT=1: see common.sh.
. benches/common.sh
bench_binary
WORK=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
example_credentials
export HOME=$WORK

config() { # N LIFETIME MIN_REMAINING
  local n=$1 dir=$WORK/keys-$1-$2
  mkdir -p "$dir"
  printf '[defaults]\nregion = "us-east-1"\nlifetime = "%s"\nmin_remaining = "%s"\n' "$2" "$3"
  for i in $(seq "$n"); do
    printf '\n[[key]]\nname = "k%04d"\n[[key.sink]]\ntype = "file"\npath = "%s/k%04d.key"\n' "$i" "$dir" "$i"
  done
}

# Sum of a /proc status field over all live threads of $1.
threads_sum() { cat /proc/"$1"/task/*/status 2>/dev/null | awk -v f="$2:" '$1==f {s+=$2} END {print s+0}'; }
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }

measure() { # N RUN → one line "rss_kib cpu_s wakeups"
  local n=$1 cfg=$WORK/idle-$1.toml log=$WORK/idle-$1-$2.log
  config "$n" 12h 5m > "$cfg"
  "$BIN" run --config "$cfg" --log-format json 2> "$log" & local pid=$!
  # Wait for every key's first delivery, then for the blocking-pool threads that wrote
  # the files to retire (10 s idle), so the window measures the idle daemon only.
  until [ "$(grep -c 'key minted and delivered' "$log")" -ge "$n" ]; do sleep 0.2; done
  sleep 12
  local cs0 cpu0 cs1 cpu1 rss
  cs0=$(threads_sum "$pid" voluntary_ctxt_switches); cpu0=$(cpu_ticks "$pid")
  sleep "$IDLE"
  cs1=$(threads_sum "$pid" voluntary_ctxt_switches); cpu1=$(cpu_ticks "$pid")
  rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
  kill -TERM "$pid"; wait "$pid"
  echo "$rss $(echo "($cpu1-$cpu0)/$(getconf CLK_TCK)" | bc -l) $((cs1-cs0))"
}

summary() { # N FILE
  python3 - "$1" "$2" "$IDLE" <<'PY'
import statistics, sys
n, path, idle = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [tuple(map(float, l.split())) for l in open(path) if l.strip()]
rss = [r[0] / 1024 for r in rows]; cpu = [r[1] for r in rows]; wake = [r[2] for r in rows]
print(f"{n:>5} keys, {len(rows)} runs of {idle}s idle: RSS median {statistics.median(rss):.1f} MiB "
      f"(min {min(rss):.1f}, max {max(rss):.1f}); CPU median {statistics.median(cpu):.2f} s "
      f"(max {max(cpu):.2f}); wake-ups median {statistics.median(wake):.0f} (max {max(wake):.0f})")
PY
}

echo "machine: $(nproc) cores, $(uname -r); binary $(stat -c %s "$BIN") bytes; load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in 1 1000; do
  : > "$WORK/runs-$n"
  for run in $(seq "$RUNS"); do
    measure "$n" "$run" | tee -a "$WORK/runs-$n" | sed "s/^/  $n keys, run $run: rss_kib cpu_s wakeups = /"
  done
  summary "$n" "$WORK/runs-$n"
done

# Short lifetimes: 60 s keys re-minted at 30 s (never later than 10 s before expiry).
cfg=$WORK/short.toml log=$WORK/short.log
config 1000 60s 10s > "$cfg"
"$BIN" run --config "$cfg" --log-format json 2> "$log" & pid=$!
sleep "$SHORT"
kill -TERM "$pid"; wait "$pid"
python3 - "$log" "$SHORT" <<'PY'
import json, sys, datetime
log, window = sys.argv[1], int(sys.argv[2])
parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
mints = {}
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    f = e.get("fields", {})
    if f.get("message") == "key minted and delivered":
        key = e.get("span", {}).get("key") or e.get("spans", [{}])[-1].get("key")
        mints.setdefault(key, []).append((parse(e["timestamp"]), parse(f["expires_at"])))
late = [(k, a[1], b[0]) for k, ms in mints.items() for a, b in zip(ms, ms[1:]) if b[0] >= a[1]]
counts = sorted(len(v) for v in mints.values())
print(f"1000 keys, 60s lifetime, {window}s: {len(mints)} keys minted, mints per key "
      f"min {counts[0]} median {counts[len(counts)//2]} max {counts[-1]}; "
      f"re-mints after expiry: {len(late)}")
sys.exit(1 if late or len(mints) != 1000 else 0)
PY
