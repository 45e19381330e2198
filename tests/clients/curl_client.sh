#!/usr/bin/env bash
# curl in a loop as a long-lived client: POST …/model/M/converse every ~1 s.
# The key is read once from AWS_BEARER_TOKEN_BEDROCK into a 0600 header file (never on a
# command line, where `ps` would show it). Prints `ok converse` or `fail <status> <why>`
# per call and `tally ok=N fail=M`; exits 0 when every call succeeded.
#   AWS_BEARER_TOKEN_BEDROCK=… curl_client.sh --endpoint URL [--duration S] [--interval WHOLE_SECONDS] [--ca FILE]
set -u
endpoint='' duration=60 interval=1 ca="${AWS_CA_BUNDLE:-}" model='anthropic.claude-sonnet-4-5-20250929-v1:0'
while [ $# -gt 0 ]; do
  case "$1" in
    --endpoint) endpoint=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --ca) ca=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --no-stream) shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$endpoint" ] && [ -n "${AWS_BEARER_TOKEN_BEDROCK:-}" ] || { echo "need --endpoint and AWS_BEARER_TOKEN_BEDROCK" >&2; exit 2; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
(umask 077; printf 'Authorization: Bearer %s\nContent-Type: application/json\n' "$AWS_BEARER_TOKEN_BEDROCK" > "$dir/h")
unset AWS_BEARER_TOKEN_BEDROCK
cacert=(); [ -n "$ca" ] && cacert=(--cacert "$ca")
ok=0 fail=0
end=$(( $(date +%s%N) + ${duration%.*} * 1000000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
  t0=$(date +%s%N)
  status=$(curl -sS --max-time 30 "${cacert[@]}" -H "@$dir/h" -o "$dir/body" -w '%{http_code}' \
    --data-binary '{"messages":[{"role":"user","content":[{"text":"hello"}]}]}' \
    "$endpoint/model/$model/converse" 2>"$dir/err")
  if [ "$status" = 200 ] && grep -q '"output"' "$dir/body"; then
    ok=$((ok+1)); echo "ok converse"
  else
    fail=$((fail+1)); echo "fail ${status:--} converse: $(head -c 300 "$dir/body" "$dir/err" 2>/dev/null | tr '\n' ' ')"
  fi
  rest=$(( interval * 1000000000 - ($(date +%s%N) - t0) ))
  [ "$rest" -gt 0 ] && sleep "$((rest / 1000000000)).$(printf '%09d' $((rest % 1000000000)))"
done
echo "tally ok=$ok fail=$fail"
[ "$ok" -gt 0 ] && [ "$fail" -eq 0 ]
