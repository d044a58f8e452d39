#!/usr/bin/env bash
# Builds the example plugins for wasm32-wasip2 into target/wasm32-wasip2/release/,
# where examples/wsgate.toml expects them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --target wasm32-wasip2 -p echo -p connection-id -p chat -p auth
