#!/usr/bin/env python3
"""Static check of the LaunchAgent plist: strict parse + the launchd keys it must have.

There is no launchd (or plutil) on Linux, so this pins what launchd.plist(5) requires
and what our agent promises: usage `check_plist.py PLIST [INSTALLED_BINARY...]`.
Exits 1 with one line per problem.
"""
import os
import plistlib
import sys

# Keys launchd.plist(5) documents that this agent may use, with their types.
# Anything else is most likely a typo that launchd would silently ignore.
KNOWN = {
    "Label": str, "ProgramArguments": list, "Program": str, "RunAtLoad": bool,
    "KeepAlive": (bool, dict), "ThrottleInterval": int, "ProcessType": str,
    "StandardOutPath": str, "StandardErrorPath": str, "EnvironmentVariables": dict,
    "LimitLoadToSessionType": (str, list), "Umask": int, "ExitTimeOut": int,
    "WorkingDirectory": str, "Nice": int, "LowPriorityIO": bool,
}
PROCESS_TYPES = {"Background", "Standard", "Adaptive", "Interactive"}
KEEPALIVE_KEYS = {"SuccessfulExit", "Crashed", "NetworkState", "PathState", "OtherJobEnabled",
                  "AfterInitialDemand"}
DEFAULT_INSTALLED = ["/usr/local/bin/bedrock-keyd", "/opt/homebrew/bin/bedrock-keyd"]
HOME = "/Users/example"  # what the README's sed puts in for @HOME@


def main() -> int:
    path = sys.argv[1]
    installed = sys.argv[2:] or DEFAULT_INSTALLED
    problems = []
    with open(path, "rb") as f:
        raw = f.read()
    try:
        # fmt=FMT_XML: refuse binary plists and anything that is not a well-formed XML
        # plist (plistlib rejects bad nesting and e.g. <integer>ten</integer>).
        plist = plistlib.loads(raw, fmt=plistlib.FMT_XML)
    except Exception as e:  # noqa: BLE001 - any parse error is the finding
        print(f"{path}: not a valid XML plist: {e}")
        return 1
    rendered = plistlib.loads(raw.replace(b"@HOME@", HOME.encode()), fmt=plistlib.FMT_XML)

    for key, value in plist.items():
        if key not in KNOWN:
            problems.append(f"unknown launchd key {key!r} (typo?)")
        elif not isinstance(value, KNOWN[key]):
            problems.append(f"{key} has type {type(value).__name__}")
    for key in ("Label", "ProgramArguments", "RunAtLoad", "KeepAlive", "ThrottleInterval",
                "ProcessType", "StandardOutPath", "StandardErrorPath"):
        if key not in plist:
            problems.append(f"missing required key {key}")
    if problems:
        print("\n".join(f"{path}: {p}" for p in problems))
        return 1

    stem = os.path.basename(path).removesuffix(".plist")
    if plist["Label"] != stem:
        problems.append(f"Label {plist['Label']!r} differs from the file name {stem!r}")
    args = plist["ProgramArguments"]
    if not args or args[0] not in installed:
        problems.append(f"ProgramArguments[0] {args[:1]} is not an installed path {installed}")
    if args[1:2] != ["run"]:
        problems.append(f"ProgramArguments must run the daemon ('run'), got {args[1:]}")
    if "Program" in plist:
        problems.append("Program duplicates ProgramArguments[0]; drop it")
    if plist["RunAtLoad"] is not True:
        problems.append("RunAtLoad must be true (start at login)")
    keep = plist["KeepAlive"]
    if keep is False or keep == {}:
        problems.append("KeepAlive must restart the daemon")
    if isinstance(keep, dict) and not set(keep) <= KEEPALIVE_KEYS:
        problems.append(f"unknown KeepAlive keys {sorted(set(keep) - KEEPALIVE_KEYS)}")
    if isinstance(keep, dict) and keep.get("SuccessfulExit") is not False:
        problems.append("KeepAlive.SuccessfulExit must be false (a clean exit stays down)")
    if not 10 <= plist["ThrottleInterval"] <= 3600:
        problems.append("ThrottleInterval must throttle restarts (10..3600 s)")
    if plist["ProcessType"] not in PROCESS_TYPES:
        problems.append(f"ProcessType {plist['ProcessType']!r} not in {sorted(PROCESS_TYPES)}")
    for key in ("StandardOutPath", "StandardErrorPath"):
        value = rendered[key]
        if not value.startswith(HOME + "/Library/Logs/"):
            problems.append(f"{key} {plist[key]!r} is not under @HOME@/Library/Logs/")
        if "~" in value or "$" in value:
            problems.append(f"{key}: launchd expands neither ~ nor $VARS")
    if "@" in repr({k: v for k, v in rendered.items()}):
        problems.append("placeholder other than @HOME@ left in the plist")
    if plist.get("Umask", 63) & 0o077 != 0o077:
        problems.append("Umask must keep new files private (include 077)")

    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        print(f"{path}: ok ({len(plist)} keys)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
