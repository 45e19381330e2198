#!/usr/bin/env bash
# Where the wall time of `bedrock-keyd once` goes, step by step, next to the
# `dd conv=fsync` floor of benches/peers.sh. Each step adds one thing to an earlier one:
#
#   /bin/true                     start a small C program (loader, glibc start-up)
#   dd conv=fsync (the floor)     + write the key's bytes and fsync them
#   bedrock-keyd --version        start this binary (loader, relocations, page faults
#                                 of an 8 MB executable, argument parsing), no work
#   once → /dev/shm               + the whole job on tmpfs, where fsync costs nothing
#   once → disk                   + the two fsyncs on the disk (file, then directory)
#
#   benches/startup.sh            # RUNS=40 runs each; medians
#   EVICT=1 benches/startup.sh    # the binary read from disk first (benches/common.sh)
#   BIN=path/to/bedrock-keyd benches/startup.sh
#
# Needs hyperfine and GNU time (Debian: hyperfine, time).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
. benches/common.sh
need_timers
bench_binary
WORK=target/startup
DISK=$PWD/$WORK/out
SHM=$(mktemp -d /dev/shm/bedrock-keyd-startup.XXXXXX)
trap 'rm -rf "$SHM"' EXIT
mkdir -p "$DISK"

example_credentials
export AWS_REGION=us-east-1
"$BIN" once --lifetime 12h --file "$DISK/floor.bytes" >/dev/null 2>&1

NAMES=(true floor-dd version once-shm once-disk)
declare -A CMD=(
  [true]="/bin/true"
  [floor-dd]="dd if=$DISK/floor.bytes of=$DISK/dd.key conv=fsync status=none"
  [version]="$BIN --version"
  [once-shm]="$BIN once --lifetime 12h --file $SHM/k.key"
  [once-disk]="$BIN once --lifetime 12h --file $DISK/k.key"
)
echo "machine: $(nproc) cores, $(uname -r); binary $(stat -c %s "$BIN") bytes; load $(cut -d' ' -f1-3 /proc/loadavg)"
# A fresh target each run, as in peers.sh: creating the file is part of the job.
time_each "$WORK" "%R" "rm -f $DISK/dd.key $DISK/k.key $SHM/k.key" "${NAMES[@]}"

python3 - "$WORK" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, names = sys.argv[1], sys.argv[2:]
rows = {}
for n in names:
    wall = json.load(open(f"{work}/{n}.json"))["results"][0]["median"] * 1000
    faults = statistics.median(int(l) for l in open(f"{work}/{n}.time") if l.strip())
    rows[n] = (wall, faults)
# (label, row, the row it adds to, what the difference is)
steps = [
    ("/bin/true", "true", None, ""),
    ("dd conv=fsync (floor)", "floor-dd", "true", "write + one fsync"),
    ("bedrock-keyd --version", "version", "true", "starting this binary"),
    ("once -> /dev/shm", "once-shm", "version", "credentials, mint, write"),
    ("once -> disk", "once-disk", "once-shm", "the two fsyncs"),
]
floor = rows["floor-dd"][0]
print(f"{'step':<24}{'median wall':>12}{'÷ floor':>9}{'page faults':>13}   difference")
for label, n, base, what in steps:
    wall, faults = rows[n]
    diff = "" if base is None else f"{wall - rows[base][0]:+.2f} ms over {base}: {what}"
    print(f"{label:<24}{wall:>9.2f} ms{wall / floor:>8.1f}×{faults:>13.0f}   {diff}")
PY
