#!/usr/bin/env bash
# Static validation of every packaging artifact of bedrock-keyd (issue 7).
#
# Usage: packaging/check.sh BINARY [SECTION...]
#   BINARY    a built bedrock-keyd (release, debug or static musl); it is copied first,
#             so a concurrent rebuild cannot change it under the checks.
#   SECTION   any of: units configs launchd kubernetes container man homebrew deb rpm
#             (default: all). Each runs in its own process with `set -e`; the script
#             reports every section and exits 1 if any failed.
#
# Needs (.ci/run installs them): systemd-analyze (systemd 252), python3, node
# (optional: polkit rule syntax), kubernetes-validate (PATH, .venv-ci or .venv),
# kubectl, podman + runc, lintian, dpkg-deb/dpkg-shlibdeps, rpm/rpmbuild, rpmlint,
# busybox (a /bin/sh for scriptlets in the scratch rpm root), ruby, man-db.
# The deb section installs and purges the package on THIS machine (root, CI only).
#
# What this does NOT do: run the daemon. `run`/`once`/`status`/`check` under real
# systemd, podman pods and Kubernetes are end-to-end jobs (see packaging/README.md).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
ALL_SECTIONS=(units configs launchd kubernetes container man homebrew deb rpm)
# Kubernetes versions: the oldest with native sidecars on by default, and the newest
# kubernetes-validate bundles (its default).
K8S_OLDEST=1.29.0
K8S_CURRENT="${K8S_CURRENT:-1.37.0}"

die() { echo "FAIL: $*" >&2; exit 1; }
# Runs a command; fails if it exits non-zero OR prints anything (systemd-analyze
# verify, ruby -wc and groff exit 0 on warnings).
quiet() {
  local out
  out="$("$@" 2>&1)" || { printf '%s\n' "$out" >&2; die "$* exited non-zero"; }
  [ -z "$out" ] || { printf '%s\n' "$out" >&2; die "$* printed warnings"; }
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (${2:-see .ci/run})"; }

# ---------------------------------------------------------------------------------
# systemd units: verify (with ExecStart at the built binary), security score, the
# app drop-in, sysusers entry, a reason comment on every directive, contract bits.
sec_units() {
  need systemd-analyze
  local u="$work/units"; mkdir -p "$u/user" "$u/myapp.service.d"
  local point="s#^ExecStart=/usr/bin/bedrock-keyd#ExecStart=$bin#"
  sed "$point" "$root/systemd/bedrock-keyd.service" > "$u/bedrock-keyd.service"
  sed "$point" "$root/systemd/bedrock-keyd@.service" > "$u/bedrock-keyd@.service"
  # An instance name makes verify resolve %i like a real instance.
  cp "$u/bedrock-keyd@.service" "$u/bedrock-keyd@check.service"
  sed "$point" "$root/systemd/user/bedrock-keyd.service" > "$u/user/bedrock-keyd.service"
  grep -q "^ExecStart=$bin " "$u/bedrock-keyd.service" || die "ExecStart not rewritten"

  for f in bedrock-keyd.service bedrock-keyd@.service bedrock-keyd@check.service; do
    (cd "$u" && quiet systemd-analyze verify --man=no "./$f")
    echo "verify $f: clean"
  done
  # The user unit in user mode (%E, %t); a throw-away runtime dir stands in for a session.
  XDG_RUNTIME_DIR="$work/xdg" ; mkdir -m 0700 -p "$XDG_RUNTIME_DIR"; export XDG_RUNTIME_DIR
  (cd "$u/user" && quiet systemd-analyze --user verify --man=no ./bedrock-keyd.service)
  echo "verify user/bedrock-keyd.service: clean"
  # The drop-in, applied to a stand-in myapp.service next to the bedrock-keyd unit.
  printf '[Unit]\nDescription=stand-in app\n[Service]\nExecStart=%s --version\n' "$bin" > "$u/myapp.service"
  cp "$root/systemd/examples/myapp.service.d/bedrock-keyd.conf" "$u/myapp.service.d/"
  (cd "$u" && quiet systemd-analyze verify --man=no ./myapp.service)
  echo "verify myapp.service + drop-in: clean"

  # Exposure ≤ 2.5 ("OK"): --threshold is exposure × 10 and makes the exit code fail.
  for f in bedrock-keyd.service bedrock-keyd@check.service; do
    local score
    score="$(cd "$u" && systemd-analyze security --offline=yes --threshold=25 "./$f" | tail -n1)" \
      || die "systemd-analyze security: $f exposure above 2.5: $score"
    echo "security $f: $score"
  done

  # sysusers entry creates the user and group in a scratch root.
  local sr="$work/sysusers"; mkdir -p "$sr/etc"
  systemd-sysusers --root="$sr" - < "$root/systemd/bedrock-keyd.sysusers" 2>/dev/null
  grep -q '^bedrock-keyd:x:[0-9]*:[0-9]*:.*:/:/usr/sbin/nologin$' "$sr/etc/passwd" || die "sysusers: no user"
  grep -q '^bedrock-keyd:x:' "$sr/etc/group" || die "sysusers: no group"
  echo "sysusers: creates bedrock-keyd"

  # STYLE #11: every block of directives starts with a comment saying why.
  python3 - "$root"/systemd/bedrock-keyd.service "$root"/systemd/bedrock-keyd@.service \
    "$root"/systemd/user/bedrock-keyd.service "$root"/systemd/examples/myapp.service.d/*.conf <<'EOF'
import re, sys
bad = []
for path in sys.argv[1:]:
    prev = ""
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if re.match(r"^[A-Za-z][A-Za-z0-9]*=", line) and (prev == "" or prev.startswith("[")):
            bad.append(f"{path}:{n}: {line.split('=')[0]}= has no comment saying why")
        prev = line.strip()
print("\n".join(bad)) if bad else print("comments: every directive block has a reason")
sys.exit(1 if bad else 0)
EOF

  # The contract the units must keep (DESIGN.md), so an edit cannot drop it silently.
  local f
  for f in "$root/systemd/bedrock-keyd.service" "$root/systemd/bedrock-keyd@.service" "$root/systemd/user/bedrock-keyd.service"; do
    for want in '^Type=notify$' '^ExecReload=/bin/kill -HUP \$MAINPID$' '^Restart=on-failure$' \
                '^RestartPreventExitStatus=.*\b78\b' '^WatchdogSec=' '^UMask=0077$' '^NoNewPrivileges=yes$' \
                '^SystemCallFilter=@system-service$' '^RuntimeDirectory=bedrock-keyd' '^RuntimeDirectoryPreserve=yes$'; do
      grep -Eq "$want" "$f" || die "${f#"$root"/}: missing $want"
    done
  done
  for f in "$root/systemd/bedrock-keyd.service" "$root/systemd/bedrock-keyd@.service"; do
    for want in '^ProtectSystem=strict$' '^KeyringMode=private$' '^User=bedrock-keyd$' '^CapabilityBoundingSet=$'; do
      grep -Eq "$want" "$f" || die "${f#"$root"/}: missing $want"
    done
  done
  grep -q '^ExecStart=/usr/bin/bedrock-keyd run --config /etc/bedrock-keyd/config.toml$' "$root/systemd/bedrock-keyd.service" \
    || die "system unit: ExecStart must use /etc/bedrock-keyd/config.toml"
  grep -q '^ExecStart=/usr/bin/bedrock-keyd run --config /etc/bedrock-keyd/%i.toml$' "$root/systemd/bedrock-keyd@.service" \
    || die "template unit: ExecStart must use /etc/bedrock-keyd/%i.toml"
  grep -q '^ExecStart=/usr/bin/bedrock-keyd run --config %E/bedrock-keyd/config.toml$' "$root/systemd/user/bedrock-keyd.service" \
    || die "user unit: ExecStart must use %E/bedrock-keyd/config.toml"
  echo "contract: Type=notify, SIGHUP reload, 78 not restarted, hardening present"

  # The example bedrock-keyd config fragment parses as TOML and names the unit.
  python3 -c 'import sys,tomllib; c=tomllib.load(open(sys.argv[1],"rb")); assert c["key"][0]["notify"][0]["systemd_unit"]=="myapp.service"' \
    "$root/systemd/examples/myapp.toml"
  echo "examples/myapp.toml: parses"
  if command -v node >/dev/null; then
    cp "$root/systemd/examples/polkit/50-bedrock-keyd.rules" "$work/polkit-rule.js"
    node --check "$work/polkit-rule.js"
    echo "polkit rule: JavaScript syntax ok"
  else
    echo "polkit rule: skipped (no node)"
  fi
}

# ---------------------------------------------------------------------------------
# Every shipped bedrock-keyd config, through the daemon's own parser (`check`): the
# packaged /etc config, the annotated example, the laptop config, the ConfigMap's TOML
# and the systemd example fragment (appended to the packaged config).
sec_configs() {
  if ! "$bin" check --help >/dev/null 2>&1; then
    [ "${BEDROCK_KEYD_REQUIRE_ALL:-0}" != 1 ] || die "$bin has no \`check\` command"
    echo "configs: skipped ($bin has no \`check\` command yet)"
    return 0
  fi
  python3 - "$root/packaging/kubernetes/configmap.yaml" > "$work/configmap.toml" <<'EOF'
import sys, yaml
print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d)["data"]["config.toml"])
EOF
  { cat "$root/packaging/deb-config.toml"; sed -n '/^\[\[key\]\]/,$p' "$root/systemd/examples/myapp.toml"; } \
    > "$work/myapp-combined.toml"
  local c configs=("$root/packaging/deb-config.toml" "$root/packaging/launchd/config.toml"
                   "$work/configmap.toml" "$work/myapp-combined.toml")
  [ ! -f "$root/packaging/config.example.toml" ] || configs+=("$root/packaging/config.example.toml")
  for c in "${configs[@]}"; do
    "$bin" check --config "$c" > "$work/check.out" 2>&1 || { cat "$work/check.out" >&2; die "check --config $c"; }
    echo "check --config ${c#"$root"/}: $(tail -n1 "$work/check.out")"
  done
}

# ---------------------------------------------------------------------------------
sec_launchd() {
  local d="$root/packaging/launchd"
  python3 "$d/check_plist.py" "$d/com.github.bedrock-keyd.plist"
  if command -v xmllint >/dev/null; then quiet xmllint --noout "$d/com.github.bedrock-keyd.plist"; fi
  python3 -c 'import sys,tomllib; c=tomllib.load(open(sys.argv[1],"rb")); assert c["key"][0]["sink"][0]["type"]=="keyring"' \
    "$d/config.toml"
  echo "launchd/config.toml: parses, Keychain sink"
}

# ---------------------------------------------------------------------------------
sec_kubernetes() {
  local kv d="$root/packaging/kubernetes"
  kv="${KUBERNETES_VALIDATE:-$(command -v kubernetes-validate || true)}"
  for c in "$root/.venv-ci/bin/kubernetes-validate" "$root/.venv/bin/kubernetes-validate"; do
    [ -n "$kv" ] || { [ -x "$c" ] && kv="$c"; }
  done
  [ -n "$kv" ] || die "kubernetes-validate not found (pip install kubernetes-validate)"
  need kubectl

  local manifests=()
  for f in "$d"/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f"); done
  for v in "$K8S_OLDEST" "$K8S_CURRENT"; do
    quiet "$kv" --strict --quiet -k "$v" "${manifests[@]}"
    echo "kubernetes-validate --strict -k $v: ${#manifests[@]} files ok"
  done
  # The validator must really see the native sidecar field: 1.27 has no
  # initContainers[].restartPolicy and has to reject the Deployment.
  if "$kv" --strict --quiet -k 1.27.0 "$d/deployment-sidecar.yaml" >/dev/null 2>&1; then
    die "kubernetes-validate accepted the native sidecar for 1.27: the check is not biting"
  fi
  echo "kubernetes-validate -k 1.27.0 rejects the native sidecar (as it must)"

  kubectl kustomize "$d" > "$work/rendered.yaml"
  for v in "$K8S_OLDEST" "$K8S_CURRENT"; do
    quiet "$kv" --strict --quiet -k "$v" "$work/rendered.yaml"
  done
  grep -q 'image: registry.example.com/bedrock-keyd:0.1.0' "$work/rendered.yaml" || die "kustomize images: not applied"
  echo "kubectl kustomize: renders $(grep -c '^kind:' "$work/rendered.yaml") resources, valid"

  python3 - "$d" <<'EOF'
import glob, os, sys, tomllib, yaml
d = sys.argv[1]
docs = [doc for f in sorted(glob.glob(os.path.join(d, "*.yaml"))) for doc in yaml.safe_load_all(open(f)) if doc]
problems = []
for doc in docs:
    kind, name = doc["kind"], doc["metadata"]["name"] if "metadata" in doc else "-"
    if kind == "ConfigMap":
        tomllib.loads(doc["data"]["config.toml"])
    spec = doc.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        where = f"{kind}/{name} container {c['name']}"
        sc = c.get("securityContext", {})
        for k, want in (("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False), ("runAsNonRoot", True)):
            if sc.get(k) is not want:
                problems.append(f"{where}: securityContext.{k} must be {want}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities.drop must be [ALL]")
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                problems.append(f"{where}: subPath mount of {m['name']} never sees a rotated key")
        if c["name"] == "bedrock-keyd" and kind == "Deployment":
            if c.get("restartPolicy") != "Always":
                problems.append(f"{where}: must be a native sidecar (restartPolicy: Always)")
            probe = c.get("startupProbe", {}).get("exec", {}).get("command", [])
            if probe[:2] != ["/bedrock-keyd", "status"] or "--min-valid" not in probe:
                problems.append(f"{where}: startupProbe must exec /bedrock-keyd status --min-valid")
    if spec.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{kind}/{name}: pod seccompProfile must be RuntimeDefault")
    if volumes.get("keys", {}).get("emptyDir", {}).get("medium") != "Memory":
        problems.append(f"{kind}/{name}: the keys emptyDir must be medium: Memory")
print("\n".join(problems) if problems else "policy: non-root, read-only, no caps, RuntimeDefault, tmpfs keys, no subPath; ConfigMap TOML parses")
sys.exit(1 if problems else 0)
EOF
}

# ---------------------------------------------------------------------------------
# Builds the FROM scratch image and checks its config; runs it read-only without a
# network for `--version` and a mint | inspect round trip (commands that exist today).
sec_container() {
  need podman
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/packaging/container/containers.conf}"
  local tag="localhost/bedrock-keyd:check-$$"
  "$root/packaging/container/build.sh" "$bin" "$tag" >/dev/null 2>"$work/podman-build.err" \
    || { cat "$work/podman-build.err" >&2; die "podman build"; }
  # shellcheck disable=SC2064
  trap "podman rmi -f $tag >/dev/null 2>&1 || true; rm -rf '$work'" EXIT
  local cfg
  cfg="$(podman image inspect "$tag" --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}')"
  [ "$cfg" = '65532:65532|["/bedrock-keyd"]|["run"]' ] || die "image config: $cfg"
  echo "image: USER 65532:65532, ENTRYPOINT /bedrock-keyd, CMD run"
  local run=(podman run --rm -i --read-only --network none)
  # (ldd's output is captured, not piped into grep -q: under pipefail an early-closed
  # pipe fails the test at random, and a dynamic binary was then run without libc.)
  if [[ "$(ldd "$bin" 2>&1)" == *"=>"* ]]; then
    # Not static: lend the host's libc read-only so the image's layout can still be
    # exercised. A release image must be built from the musl binary.
    run+=(-v /lib:/lib:ro -v /lib64:/lib64:ro)
    echo "image: $bin is dynamically linked; smoke-running with the host's /lib mounted"
  fi
  # Outputs are captured, not piped into grep -q: an early-closed pipe makes podman fail.
  local out
  out="$("${run[@]}" "$tag" --version)"
  [[ "$out" == "bedrock-keyd "* ]] || die "image: --version printed: $out"
  "${run[@]}" -e AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE \
    -e AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
    "$tag" mint --region us-east-1 --lifetime 1h > "$work/key"
  out="$("${run[@]}" "$tag" inspect - < "$work/key")"
  [[ "$out" == *us-east-1* ]] || die "image: inspect of a minted key printed: $out"
  echo "image: runs read-only with --network none (--version, mint | inspect)"
}

# ---------------------------------------------------------------------------------
sec_man() {
  need man
  local warnings
  # Only stderr counts: groff's warnings about the roff source.
  warnings="$(man --warnings -E UTF-8 -l -Tutf8 -Z "$root/packaging/man/bedrock-keyd.1" 2>&1 >/dev/null)"
  [ -z "$warnings" ] || { printf '%s\n' "$warnings" >&2; die "man page: groff warnings"; }
  # Every subcommand of the contract is documented.
  for c in run once mint inspect status check exec completions; do
    grep -q "^\.B bedrock-keyd $c" "$root/packaging/man/bedrock-keyd.1" || die "man page: no synopsis for $c"
  done
  echo "man page: renders without groff warnings, documents every command"
}

sec_homebrew() {
  need ruby
  local out
  # -w: warnings (unused variables, ambiguous arguments) count as failures too.
  out="$(ruby -wc "$root/packaging/homebrew/bedrock-keyd.rb" 2>&1)" || true
  [ "$out" = "Syntax OK" ] || { printf '%s\n' "$out" >&2; die "ruby -wc"; }
  echo "homebrew formula: ruby -wc Syntax OK, no warnings"
}

# ---------------------------------------------------------------------------------
# .deb: build, lintian (errors AND warnings fail; overrides are documented in
# packaging/deb/lintian-overrides), install, reinstall (upgrade path), purge.
sec_deb() {
  need dpkg-deb; need lintian
  local deb
  deb="$(DEB_COMPRESS=gzip "$root/packaging/deb/build-deb.sh" "$bin" "$work/deb")"
  lintian --fail-on error,warning --tag-display-limit 0 "$deb" 2> >(grep -v 'running with root privileges' >&2)
  echo "lintian: $(basename "$deb") clean"
  if dpkg -s bedrock-keyd >/dev/null 2>&1; then die "bedrock-keyd is already installed here; refusing to replace it"; fi
  local files
  files="$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#' | grep -v '/$')"
  dpkg -i "$deb" >/dev/null
  /usr/bin/bedrock-keyd --version >/dev/null
  getent passwd bedrock-keyd >/dev/null || die "postinst created no bedrock-keyd user"
  [ "$(stat -c %a /etc/bedrock-keyd/config.toml)" = 644 ] || die "config mode"
  echo "# local edit" >> /etc/bedrock-keyd/config.toml
  dpkg -i --force-confold "$deb" >/dev/null
  tail -n1 /etc/bedrock-keyd/config.toml | grep -qx '# local edit' || die "reinstall replaced the edited conffile"
  dpkg -P bedrock-keyd >/dev/null
  local left=""
  for f in $files /etc/bedrock-keyd; do [ ! -e "$f" ] || left="$left $f"; done
  [ -z "$left" ] || die "dpkg -P left:$left"
  ! dpkg -s bedrock-keyd >/dev/null 2>&1 || die "still known to dpkg after purge"
  ! find /var/lib/systemd/deb-systemd-helper-* -name '*bedrock-keyd*' 2>/dev/null | grep -q . \
    || die "deb-systemd-helper state left after purge"
  echo "dpkg: -i, reinstall (conffile kept), -P: clean"
}

# ---------------------------------------------------------------------------------
# .rpm: build with rpmbuild, rpmlint with the documented config, install into a
# scratch root (with busybox as its /bin/sh so the scriptlets really run), verify,
# upgrade keeping an edited %config(noreplace), erase.
sec_rpm() {
  need rpmbuild; need rpmlint; need busybox "apt-get install busybox-static"
  local rpmfile d="$root/packaging/rpm"
  rpmfile="$("$d/build-rpm.sh" "$bin" "$work/rpm" 2> >(grep -v 'Alien' >&2))"
  rpmlint -c "$d/rpmlint.toml" -r "$d/rpmlintrc" "$rpmfile" > "$work/rpmlint.out" \
    || { cat "$work/rpmlint.out" >&2; die rpmlint; }
  grep -q ' 0 errors, 0 warnings' "$work/rpmlint.out" || { cat "$work/rpmlint.out" >&2; die "rpmlint findings"; }
  echo "rpmlint: $(basename "$rpmfile") 0 errors, 0 warnings"
  rpm -qlp "$rpmfile" 2>/dev/null | grep -qx '/usr/share/man/man1/bedrock-keyd.1.gz' || die "rpm: no man page"
  rpm -qp --configfiles "$rpmfile" 2>/dev/null | grep -qx '/etc/bedrock-keyd/config.toml' || die "rpm: config not %config"
  rpm -qp --changelog "$rpmfile" 2>/dev/null | grep -q . || die "rpm: no changelog"

  local s="$work/rpmroot" r=(rpm --root "$work/rpmroot")
  mkdir -p "$s/bin"; cp "$(command -v busybox)" "$s/bin/busybox"; ln -s busybox "$s/bin/sh"
  "${r[@]}" --initdb
  # --nodeps: the scratch root has no glibc/systemd packages to satisfy Requires.
  "${r[@]}" -i --nodeps "$rpmfile" 2>&1 | grep -v -e Alien -e 'what you are doing' -e /dev/null -e useradd || true
  "${r[@]}" -q bedrock-keyd >/dev/null 2>&1 || die "rpm: install into scratch root failed"
  "${r[@]}" -V --nodeps bedrock-keyd 2>/dev/null || die "rpm -V: files differ from the package"
  echo "# local edit" >> "$s/etc/bedrock-keyd/config.toml"
  "${r[@]}" -U --nodeps --replacepkgs "$rpmfile" >/dev/null 2>&1 || die "rpm: reinstall"
  tail -n1 "$s/etc/bedrock-keyd/config.toml" | grep -qx '# local edit' || die "rpm: %config(noreplace) not honoured"
  "${r[@]}" -e bedrock-keyd >/dev/null 2>&1 || die "rpm -e"
  local left
  left="$(find "$s" -path "$s/var" -prune -o -path "$s/root" -prune -o -path "$s/bin" -prune \
          -o -type f ! -name config.toml.rpmsave -print)"
  [ -z "$left" ] || die "rpm -e left: $left"
  echo "rpm: scratch-root install (scriptlets under busybox sh), -V, upgrade keeps edited config, erase: clean"
}

# ---------------------------------------------------------------------------------
if [ "${1:-}" = "--section" ]; then
  section="$2"; bin="$3"
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  "sec_$section"
  exit 0
fi

[ $# -ge 1 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
[ -x "$1" ] || die "$1 is not an executable binary"
sections=("${@:2}"); [ ${#sections[@]} -gt 0 ] || sections=("${ALL_SECTIONS[@]}")
stash="$(mktemp -d /var/tmp/bedrock-keyd-check.XXXXXX)"
trap 'rm -rf "$stash"' EXIT
# /var/tmp, world-traversable: systemd-analyze verify only needs it to exist, and a
# copy means a rebuild during the run cannot swap the binary.
chmod 0755 "$stash"
# Stripped (a no-op for a release build): a 150 MB debug binary would otherwise be
# copied into the image and compressed into both packages.
strip -o "$stash/bedrock-keyd" "$1" 2>/dev/null || cp "$1" "$stash/bedrock-keyd"
chmod 0755 "$stash/bedrock-keyd"

failed=()
for s in "${sections[@]}"; do
  declare -F "sec_$s" >/dev/null || die "unknown section $s (one of: ${ALL_SECTIONS[*]})"
  printf '\n== %s\n' "$s"
  start=$SECONDS
  if "$0" --section "$s" "$stash/bedrock-keyd"; then
    printf -- '-- %s: ok (%ss)\n' "$s" $((SECONDS - start))
  else
    printf -- '-- %s: FAILED (%ss)\n' "$s" $((SECONDS - start))
    failed+=("$s")
  fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "packaging/check.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "packaging/check.sh: all ${#sections[@]} sections passed (${SECONDS}s)"
