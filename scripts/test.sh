#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end tests, which start the
# real gateway binary with plugins built for wasm32-wasip2 (the test build builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
