#!/usr/bin/env bash
# Installs what the tests need beyond building wsgate, into the repository's own folders
# (rebuilt when missing, never global):
# - boto3 and the AWS CLI, for the tests that drive the management API with a real AWS
#   SDK, in a virtual environment under target/py (scripts/setup-py.sh);
# - Node.js `ws`, the benchmark baseline, under bench/node/node_modules;
# - Chromium (a system package) and Playwright for Python, for the web console's
#   browser tests (scripts/setup-console.sh).
# And one system package, when it is missing: redis-server, for the cluster tests (with
# sudo unless run as root). The tests start their own redis-server on a free loopback
# port with an empty temporary folder (tests/e2e/redis.rs), never the packaged service;
# if this script installed the package, it stops and disables the service the package
# starts on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-py.sh
scripts/setup-console.sh

if ! command -v node >/dev/null 2>&1; then
    echo "setup: Node.js is required for the benchmark baseline (the Debian package nodejs)" >&2
    exit 1
fi
if [ ! -d bench/node/node_modules/ws ]; then
    echo "setup: installing the Node.js ws baseline into bench/node" >&2
    npm ci --prefix bench/node --no-audit --no-fund --silent
fi

if ! command -v redis-server >/dev/null 2>&1; then
    redis_fail() {
        echo "setup: redis-server is required for the cluster tests and could not be installed: $*" >&2
        echo "setup: install it yourself (Debian/Ubuntu: apt-get install redis-server) and run this again" >&2
        exit 1
    }
    command -v apt-get >/dev/null 2>&1 || redis_fail "apt-get is not available"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || redis_fail "not root and sudo is not available"
        sudo=sudo
    fi
    echo "setup: installing redis-server from the system packages (${sudo:+sudo }apt-get install redis-server)" >&2
    apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server 2>&1; }
    if ! log=$(apt_install); then
        # The package lists may be missing (a fresh container) or stale: update them once.
        $sudo apt-get update -qq >/dev/null 2>&1 || redis_fail "apt-get update failed"
        log=$(apt_install) || { echo "$log" >&2; redis_fail "apt-get install redis-server failed (output above)"; }
    fi
    command -v redis-server >/dev/null 2>&1 || redis_fail "the package is installed but redis-server is not on PATH"
    # The package starts its own service on 127.0.0.1:6379, which the tests never use.
    echo "setup: stopping and disabling the packaged redis-server service (the tests start their own)" >&2
    if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now --quiet redis-server.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/redis-server ]; then
        $sudo /etc/init.d/redis-server stop >/dev/null 2>&1 || true
        $sudo update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
fi
