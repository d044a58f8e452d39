#!/usr/bin/env bash
# Installs what the web console's browser tests (tests/e2e/console.rs) need, never a
# browser download:
# - Chromium from the system packages (chromium, at /usr/bin/chromium; with sudo unless
#   run as root), when it is missing;
# - Playwright for Python, which drives that Chromium, and `websockets`, into the
#   virtual environment under target/py (scripts/setup-py.sh makes it).
# scripts/setup-tests.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the browser tests are written against this API.
PLAYWRIGHT=1.65.2
WEBSOCKETS=15.0.1

fail() {
    echo "setup: the console's browser tests need $1 and it could not be installed: $2" >&2
    echo "setup: install it yourself (Debian/Ubuntu: apt-get install chromium) and run this again" >&2
    exit 1
}

if [ ! -x /usr/bin/chromium ]; then
    command -v apt-get >/dev/null 2>&1 || fail chromium "apt-get is not available"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fail chromium "not root and sudo is not available"
        sudo=sudo
    fi
    echo "setup: installing Chromium from the system packages (${sudo:+sudo }apt-get install chromium)" >&2
    apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium 2>&1; }
    if ! log=$(apt_install); then
        # The package lists may be missing (a fresh container) or stale: update them once.
        $sudo apt-get update -qq >/dev/null 2>&1 || fail chromium "apt-get update failed"
        log=$(apt_install) || { echo "$log" >&2; fail chromium "apt-get install chromium failed (output above)"; }
    fi
    [ -x /usr/bin/chromium ] || fail chromium "the package is installed but /usr/bin/chromium is not there"
fi

venv=target/py
if ! "$venv/bin/python" - "$PLAYWRIGHT" "$WEBSOCKETS" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
assert version("playwright") == sys.argv[1] and version("websockets") == sys.argv[2]
PY
then
    echo "setup: installing playwright $PLAYWRIGHT and websockets $WEBSOCKETS into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "playwright==$PLAYWRIGHT" "websockets==$WEBSOCKETS" ||
        fail "Playwright for Python" "pip install failed (output above)"
fi
