#!/usr/bin/env bash
# Builds the plugins and the gateway, then runs the gateway on examples/wsgate.toml:
# WebSocket on 127.0.0.1:8080, management API on 127.0.0.1:9090. Extra arguments go to
# `wsgate serve`. Log level: WSGATE_LOG (default info).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh
cargo build --release -p wsgate
exec target/release/wsgate serve --config examples/wsgate.toml "$@"
