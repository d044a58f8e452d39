#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end tests, which start the
# real gateway binary with plugins built for wasm32-wasip2 (the test build builds them),
# then a smoke run of every benchmark scenario (seconds each, debug build; it checks
# that each scenario runs and reports figures, never how fast).
#
#   scripts/test.sh              # everything
#   scripts/test.sh -- NAME      # arguments go to `cargo test`, and the smoke is skipped
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
if [ $# -eq 0 ]; then
    scripts/bench.sh --smoke
fi
