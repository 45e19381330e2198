#!/bin/sh
# Runs a command next to a private, unlocked gnome-keyring Secret Service.
# Usage: dbus-run-session -- sh with-keyring.sh <command...>
# Throw-away HOME and XDG_RUNTIME_DIR, so the developer's own keyring is never touched.
set -e
HOME="$(mktemp -d)"; XDG_RUNTIME_DIR="$(mktemp -d)"; export HOME XDG_RUNTIME_DIR
chmod 700 "$XDG_RUNTIME_DIR"
# The password on stdin unlocks (and first creates) the login collection headlessly.
printf '%s' "${KEYRING_PASSWORD:-testpw}" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
# D-Bus activation may race a second daemon: wait until the service has an owner.
i=0
until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; do
  i=$((i+1)); [ $i -lt 50 ] || { echo "secret service did not appear" >&2; exit 1; }; sleep 0.1
done
exec "$@"
