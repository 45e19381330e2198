#!/usr/bin/env bash
# The local Bedrock proxy under load (issue 15): added latency and throughput of
# `bedrock-keyd run --proxy` (HTTP in, TLS out to the upstream) against direct TLS calls
# to the same upstream, and the same load through LiteLLM's proxy (the gateway users
# pick today), at 1 and 64 concurrent connections; and the RSS of `run` under the
# 64-connection load.
#
#   benches/proxy.sh                      # RUNS=3 runs of DURATION=10 s per cell
#   nice -n -15 benches/proxy.sh          # as root on a shared machine: less noise in p99
#   RUNS=5 DURATION=20 benches/proxy.sh
#   NO_LITELLM=1 benches/proxy.sh         # skip the LiteLLM peer (its venv takes ~2 min)
#   BIN_B=other/bedrock-keyd benches/proxy.sh   # a second proxy (proxy-b) interleaved with
#   ENV_B="NAME=value" benches/proxy.sh         # the first: another build or setting
#
# The upstream is nginx (one worker) answering Converse with a fixed JSON document over
# TLS, so the upstream costs as little as possible and the difference is the proxy's.
# The client is wrk with a Lua script POSTing a Converse body with a bearer token. wrk,
# nginx and the proxy share the machine's 2 cores: the absolute numbers are this
# machine's, the differences are the point. Medians over RUNS runs.
#
# Needs: wrk, nginx (apt-get install -y wrk nginx-light), openssl; LiteLLM's proxy in
# .venv-bench (made here on first use, pinned as below).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
. benches/common.sh
for tool in wrk nginx openssl; do
  command -v "$tool" >/dev/null || { echo "install $tool (apt-get install -y wrk nginx-light openssl)" >&2; exit 1; }
done
bench_binary
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
example_credentials
export HOME=$WORK
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT: until something accepts on 127.0.0.1:PORT (30 s)
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; exit 1
}

# --- the upstream: nginx, TLS, one worker, keep-alive ------------------------------------
NGX_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$WORK/ngx.key" -out "$WORK/ngx.crt" -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null
mkdir -p "$WORK/nginx/logs"
CONVERSE='{"output":{"message":{"role":"assistant","content":[{"text":"hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":1}}'
cat > "$WORK/nginx.conf" <<EOF
daemon off;
worker_processes 1;
error_log $WORK/nginx/logs/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGX_PORT ssl;
    ssl_certificate $WORK/ngx.crt;
    ssl_certificate_key $WORK/ngx.key;
    location ~ ^/model/[^/]+/converse\$ {
      default_type application/json;
      return 200 '$CONVERSE';
    }
  }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
wait_port "$NGX_PORT"

# --- bedrock-keyd run --proxy: HTTP in, TLS out to nginx --------------------------------
PROXY_PORT=$(free_port)
mkdir -m 700 "$WORK/proxy"
AWS_CA_BUNDLE=$WORK/ngx.crt "$BIN" run --region us-west-2 \
  --proxy "127.0.0.1:$PROXY_PORT" --proxy-token-file "$WORK/proxy/token" \
  --proxy-upstream "https://127.0.0.1:$NGX_PORT" 2> "$WORK/run.log" & RUN_PID=$!
PIDS+=($RUN_PID)
wait_port "$PROXY_PORT"
LOCAL_TOKEN=$(cat "$WORK/proxy/token")

# --- optionally a second proxy to compare with (another build, another setting) -------
# BIN_B=path and/or ENV_B="NAME=value ..." start it; it runs as target proxy-b,
# interleaved with the others, so both builds see the same machine state.
PROXY_B_PORT=
if [ -n "${BIN_B:-}${ENV_B:-}" ]; then
  PROXY_B_PORT=$(free_port)
  mkdir -m 700 "$WORK/proxy-b"
  # shellcheck disable=SC2086 # ENV_B is a list of NAME=value words
  env ${ENV_B:-} AWS_CA_BUNDLE="$WORK/ngx.crt" "${BIN_B:-$BIN}" run --region us-west-2 \
    --proxy "127.0.0.1:$PROXY_B_PORT" --proxy-token-file "$WORK/proxy-b/token" \
    --proxy-upstream "https://127.0.0.1:$NGX_PORT" 2> "$WORK/run-b.log" & RUN_B_PID=$!
  PIDS+=($RUN_B_PID)
  wait_port "$PROXY_B_PORT"
fi

# --- nginx as a reverse proxy: the fast peer (HTTP in, TLS out, keep-alive upstream) -
# A second nginx, one worker, doing what the proxy does: set the Authorization header
# and forward to the same upstream through a keep-alive pool of up to 64 connections.
NGXP_PORT=$(free_port)
mkdir -p "$WORK/nginx-proxy/logs"
cat > "$WORK/nginx-proxy.conf" <<EOF
daemon off;
worker_processes 1;
error_log $WORK/nginx-proxy/logs/error.log warn;
pid $WORK/nginx-proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream bedrock { server 127.0.0.1:$NGX_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGXP_PORT;
    location / {
      proxy_pass https://bedrock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1;
      proxy_set_header Authorization "Bearer unchecked-by-nginx";
      proxy_ssl_trusted_certificate $WORK/ngx.crt;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;  # nginx matches names only, not IP addresses
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
nginx -c "$WORK/nginx-proxy.conf" -p "$WORK/nginx-proxy" & NGXP_MASTER=$!
PIDS+=($NGXP_MASTER)
wait_port "$NGXP_PORT"
NGXP_WORKER=$(pgrep -P "$NGXP_MASTER")

# --- LiteLLM's proxy, 1 worker, a bedrock converse deployment pointed at nginx ----------
LITELLM_PORT=
if [ "${NO_LITELLM:-0}" != 1 ]; then
  if [ ! -x .venv-bench/bin/litellm ]; then
    # litellm[proxy] 1.110.2 names litellm-proxy packages that the registry does not
    # serve; the proxy server ships in the litellm wheel, so its extra's other
    # dependencies are installed by hand (the ones its start-up imports).
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -q --disable-pip-version-check 'litellm==1.110.2' \
      'gunicorn==23.0.0' 'uvicorn==0.55.0' 'uvloop==0.23.0' 'fastapi==0.165.0' 'starlette==1.10.0' \
      'backoff==2.2.1' 'rq==2.12.0' 'orjson==3.13.0' 'apscheduler==3.11.3' 'fastapi-sso==0.23.0' \
      'pyjwt==2.15.1' 'python-multipart==0.0.34' 'cryptography==50.0.2' 'pynacl==1.6.2' \
      'websockets==15.0.1' 'mcp==2.3.0' 'restrictedpython==8.5' 'rich==13.9.4' \
      'expression==5.8.0' 'semver==3.2.0' 'soundfile==0.14.0' 'polars==1.44.2' 'hiredis==3.5.0' \
      'tomlkit==0.15.3' 'inquirerpy==0.3.4' 'azure-identity==1.27.0' 'azure-storage-blob==12.31.1' \
      'granian==2.8.9'
  fi
  LITELLM_PORT=$(free_port)
  # The key is never checked by nginx; a real one keeps LiteLLM on the bearer path.
  KEY=$("$BIN" mint --region us-west-2)
  # LiteLLM refuses to start without a strong master key; clients send it as their bearer.
  MASTER_KEY="sk-$(openssl rand -hex 24)"
  cat > "$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: bedrock-model
    litellm_params:
      model: bedrock/converse/anthropic.claude-sonnet-4-5-20250929-v1:0
      api_key: "$KEY"
      aws_region_name: us-west-2
      aws_bedrock_runtime_endpoint: https://127.0.0.1:$NGX_PORT
litellm_settings:
  ssl_verify: $WORK/ngx.crt
  telemetry: false
general_settings:
  master_key: $MASTER_KEY
EOF
  T0=$SECONDS
  (cd "$WORK" && exec env LITELLM_LOG=ERROR LITELLM_OFFLINE_MODE=true LITELLM_LOCAL_MODEL_COST_MAP=True "$OLDPWD/.venv-bench/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 \
    --port "$LITELLM_PORT" --num_workers 1 > "$WORK/litellm.log" 2>&1) & PIDS+=($!)
  # Listening is not ready: wait for the first answered chat completion (up to 3 min).
  for _ in $(seq 180); do
    curl -sf -o /dev/null -H "Authorization: Bearer $MASTER_KEY" -H 'Content-Type: application/json' \
      -d '{"model":"bedrock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}' \
      "http://127.0.0.1:$LITELLM_PORT/chat/completions" && break
    sleep 1
  done
  echo "LiteLLM proxy answering after $((SECONDS - T0)) s" >&2
fi

# --- the load -------------------------------------------------------------------------
lua() { # TOKEN BODY → a wrk script POSTing BODY with the token
  cat <<EOF
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
EOF
}
BODY='{"messages":[{"role":"user","content":[{"text":"hello"}]}]}'
lua "unchecked-by-nginx" "$BODY" > "$WORK/direct.lua"
lua "$LOCAL_TOKEN" "$BODY" > "$WORK/proxy.lua"
lua "unchecked-by-nginx" "$BODY" > "$WORK/nginx-proxy.lua"
[ -n "$PROXY_B_PORT" ] && lua "$(cat "$WORK/proxy-b/token")" "$BODY" > "$WORK/proxy-b.lua"
lua "${MASTER_KEY:-}" '{"model":"bedrock-model","messages":[{"role":"user","content":"hello"}],"max_tokens":16}' > "$WORK/litellm.lua"
MODEL_PATH=/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse
declare -A URL=(
  [direct]="https://127.0.0.1:$NGX_PORT$MODEL_PATH"
  [proxy]="http://127.0.0.1:$PROXY_PORT$MODEL_PATH"
  [nginx-proxy]="http://127.0.0.1:$NGXP_PORT$MODEL_PATH"
  [proxy-b]="http://127.0.0.1:${PROXY_B_PORT:-0}$MODEL_PATH"
  [litellm]="http://127.0.0.1:${LITELLM_PORT:-0}/chat/completions"
)
TARGETS=(direct proxy nginx-proxy)
[ -n "$PROXY_B_PORT" ] && TARGETS+=(proxy-b)
[ -n "$LITELLM_PORT" ] && TARGETS+=(litellm)

# wrk's summary → "req_s p50_us p99_us non2xx errors"
parse() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = {p: us(v, u) for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
print(f"{rps:.0f} {lat['50']:.0f} {lat['99']:.0f} {non2xx.group(1) if non2xx else 0} {sum(map(int, errs.groups())) if errs else 0}")
PY
}

TICKS=$(getconf CLK_TCK)
declare -A CPU_PID=([proxy]=$RUN_PID [nginx-proxy]=$NGXP_WORKER [proxy-b]=${RUN_B_PID:-})
cpu_ticks() { # PID: its user + system time so far, in clock ticks
  # Fields after the parenthesised command name: utime and stime are the 12th and 13th.
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
for c in 1 64; do
  threads=$(( c == 1 ? 1 : 2 ))
  # Run by run, each target in turn: a slow drift of the machine's state (another
  # process, the page cache, the CPU's clock) then weighs on every target alike.
  for run in $(seq "$RUNS"); do
    for target in "${TARGETS[@]}"; do
      f=$OUT/$target-c$c-$run.txt
      # Warm the connections and the pools first, outside the measurement.
      wrk -t"$threads" -c"$c" -d2s -s "$WORK/$target.lua" "${URL[$target]}" > /dev/null 2>&1
      pid=${CPU_PID[$target]:-}
      [ -n "$pid" ] && cpu0=$(cpu_ticks "$pid")
      wrk -t"$threads" -c"$c" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/$target.lua" "${URL[$target]}" > "$f"
      parse "$f" > "$f.parsed"
      if [ -n "$pid" ]; then
        # The proxy's CPU time (user + system) per request answered in the run.
        cpu1=$(cpu_ticks "$pid")
        requests=$(awk '/requests in/ {print $1}' "$f")
        echo "$(( (cpu1 - cpu0) * 1000000 / TICKS / requests ))" > "$f.cpu"
      fi
    done
  done
done
# VmHWM is the peak since start, so read once after the 64-connection runs (the last).
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
echo "run's peak RSS (VmHWM) after the 64-connection runs: $(peak_kib "$RUN_PID") KiB" > "$OUT/rss.txt"
[ -n "$PROXY_B_PORT" ] && echo "proxy-b: run's peak RSS (VmHWM) after the 64-connection runs: $(peak_kib "$RUN_B_PID") KiB" >> "$OUT/rss.txt"

# --- summary --------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" "$DURATION" "${TARGETS[@]}" <<'PY'
import statistics, sys
out, runs, duration, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
med = {}
for c in (1, 64):
    for t in targets:
        rows = [list(map(float, open(f"{out}/{t}-c{c}-{r}.txt.parsed").read().split())) for r in range(1, runs + 1)]
        med[t, c] = [statistics.median(col) for col in zip(*rows)]
        bad = sum(r[3] + r[4] for r in rows)
        if bad:
            print(f"WARNING: {t} c={c}: {bad:.0f} non-2xx responses or socket errors", file=sys.stderr)
def fmt_us(v):
    return f"{v:.0f} µs" if v < 1000 else f"{v/1000:.2f} ms"
print(f"medians of {runs} runs of {duration} s (wrk, keep-alive)\n")
print("| path | conns | req/s | p50 | p99 | added p50 | added p99 |")
print("|---|---|---|---|---|---|---|")
for c in (1, 64):
    d = med["direct", c]
    for t in targets:
        m = med[t, c]
        added = ("–", "–") if t == "direct" else (fmt_us(m[1] - d[1]), fmt_us(m[2] - d[2]))
        print(f"| {t} | {c} | {m[0]:,.0f} | {fmt_us(m[1])} | {fmt_us(m[2])} | {added[0]} | {added[1]} |")
for c in (1, 64):
    cpu = {t: statistics.median(int(open(f"{out}/{t}-c{c}-{r}.txt.cpu").read()) for r in range(1, runs + 1)) for t in ("proxy", "nginx-proxy", "proxy-b") if t in targets}
    b = f", proxy-b {cpu['proxy-b']:.0f} µs" if "proxy-b" in cpu else ""
    print(f"\nc={c}: CPU time per request (user + system, median): bedrock-keyd's proxy {cpu['proxy']:.0f} µs, nginx as a proxy {cpu['nginx-proxy']:.0f} µs{b}")
for c in (1, 64):
    n, d = med["nginx-proxy", c], med["direct", c]
    for t in ("proxy", "proxy-b"):
        if t in targets:
            p = med[t, c]
            print(f"\nc={c}: {t} serves {p[0] / n[0]:.2f}x nginx-as-a-proxy's requests/s; added p99 {fmt_us(p[2] - d[2])} against nginx's {fmt_us(n[2] - d[2])}")
if "litellm" in targets:
    for c in (1, 64):
        print(f"\nc={c}: bedrock-keyd's proxy serves {med['proxy', c][0] / med['litellm', c][0]:.0f}x LiteLLM's requests/s")
PY
cat "$OUT/rss.txt"
echo "raw wrk output: $OUT (kept only with OUT=dir)" >&2
