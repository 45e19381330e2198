#!/usr/bin/env python3
"""A stand-in for `bedrock-keyd run` / `status`, ONLY to prove the e2e harnesses.

It implements the slice of the contract the harnesses observe (sd_notify READY/STATUS/
WATCHDOG from the main pid, atomic file sinks, SIGHUP reload+re-mint, SIGTERM exit 0,
exit 78 on an invalid config, `status --file F --min-valid DUR`) and mints with the
real binary's `mint`/`inspect`, found in $BEDROCK_KEYD_REAL. It is not the daemon: once
`run`/`status` exist, the harnesses are pointed at the real binary instead.
"""
import json, os, re, signal, socket, subprocess, sys, time, tomllib

REAL = os.environ.get("BEDROCK_KEYD_REAL", "/usr/bin/bedrock-keyd")


def seconds(text):
    total = 0
    for n, unit in re.findall(r"(\d+)([hms])", text):
        total += int(n) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(msg.encode(), "\0" + path[1:] if path.startswith("@") else path)
        s.close()


def load(path):
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    keys = cfg.get("key") or []
    if not keys:
        raise ValueError("no [[key]]")
    return cfg


def deliver(cfg):
    region = cfg.get("defaults", {}).get("region", "us-east-1")
    lifetime = cfg.get("defaults", {}).get("lifetime", "1h")
    for key in cfg["key"]:
        out = subprocess.run([REAL, "mint", "--region", key.get("region", region), "--lifetime",
                              key.get("lifetime", lifetime)], check=True, capture_output=True, text=True).stdout
        for sink in key.get("sink", []):
            path = sink["path"]
            tmp = f"{path}.tmp{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, int(sink.get("mode", "0600"), 8))
            os.fchmod(fd, int(sink.get("mode", "0600"), 8))
            os.write(fd, out.encode())
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, path)


def run(config):
    try:
        cfg = load(config)
    except Exception as e:  # noqa: BLE001
        print(f"config invalid: {config}: {e}", file=sys.stderr)
        sys.exit(78)
    events = []
    signal.signal(signal.SIGHUP, lambda *_: events.append("hup"))
    signal.signal(signal.SIGTERM, lambda *_: events.append("term"))
    def next_refresh(cfg):
        d = cfg.get("defaults", {})
        return time.time() + seconds(d.get("lifetime", "1h")) * float(d.get("refresh_at", 0.5))

    deliver(cfg)
    due = next_refresh(cfg)
    notify(f"READY=1\nSTATUS=minted {len(cfg['key'])} key(s)")
    wd = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
    while True:
        time.sleep(min(wd, 0.2) if wd else 0.2)
        if wd:
            notify("WATCHDOG=1")
        if time.time() >= due:
            deliver(cfg)
            due = next_refresh(cfg)
        while events:
            ev = events.pop(0)
            if ev == "term":
                sys.exit(0)
            notify("RELOADING=1")
            try:
                cfg = load(config)
            except Exception as e:  # noqa: BLE001
                print(f"reload rejected, keeping the running config: {e}", file=sys.stderr)
            deliver(cfg)
            notify("READY=1\nSTATUS=reloaded")


def status(path, min_valid):
    r = subprocess.run([REAL, "inspect", "--file", path, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(3)
    remaining = json.loads(r.stdout).get("remaining_seconds")
    if remaining is None:  # older inspect JSON: trust its validity verdict
        sys.exit(0)
    sys.exit(0 if remaining >= seconds(min_valid) else 3)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["run"]:
        run(a[a.index("--config") + 1])
    elif a[:1] == ["once"]:
        deliver(load(a[a.index("--config") + 1]))
    elif a[:1] == ["status"]:
        status(a[a.index("--file") + 1], a[a.index("--min-valid") + 1] if "--min-valid" in a else "0s")
    elif a[:1] == ["--version"]:
        print("bedrock-keyd-standin 0")
    else:
        sys.exit(2)
