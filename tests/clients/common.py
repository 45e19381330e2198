"""What the Python client scripts share: arguments, the ~1 s call loop, the output lines.

Each client is one long-lived process: it configures its key once, then calls the
endpoint every `--interval` seconds for `--duration` seconds, printing `ok <what>` or
`fail <status> <why>` per call and a final `tally ok=N fail=M`. It never prints the key.
Exit status: 0 when every call succeeded (and at least one was made), else 1.
"""
import argparse
import os
import sys
import time


def parse_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--endpoint", required=True, help="base URL, e.g. https://127.0.0.1:8790")
    ap.add_argument("--duration", type=float, default=60, help="seconds to keep calling")
    ap.add_argument("--interval", type=float, default=1, help="seconds between call starts")
    ap.add_argument("--model", default="anthropic.claude-sonnet-4-5-20250929-v1:0")
    ap.add_argument("--region", default="us-west-2")
    ap.add_argument("--ca", default=os.environ.get("AWS_CA_BUNDLE"), help="CA bundle for the endpoint")
    ap.add_argument("--no-stream", action="store_true", help="only the plain call, never the streaming one")
    return ap.parse_args()


def loop(args: argparse.Namespace, calls) -> int:
    """Alternates over `calls` (name → function raising on failure) until the duration ends."""
    ok = fail = 0
    start = time.monotonic()
    i = 0
    while True:
        t = time.monotonic()
        if t - start >= args.duration:
            break
        name, call = calls[i % len(calls)]
        i += 1
        try:
            call()
            ok += 1
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is a line of output, not a crash
            fail += 1
            status, why = describe(e)
            print(f"fail {status} {name}: {why}", flush=True)
        rest = args.interval - (time.monotonic() - t)
        if rest > 0:
            time.sleep(rest)
    print(f"tally ok={ok} fail={fail}", flush=True)
    return 0 if ok and not fail else 1


def describe(e: Exception) -> tuple:
    """(HTTP status or '-', one line of why) from whatever the SDK raised."""
    status = getattr(e, "status_code", None)
    resp = getattr(e, "response", None)
    if status is None and isinstance(resp, dict):
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    why = " ".join(str(e).split())[:300]
    # Paranoia: a key must never reach the output, even inside an error message.
    if "bedrock-api-key-" in why:
        why = "(message withheld: it contained a key)"
    return (status or "-", why)


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set")
    return value
