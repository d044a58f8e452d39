#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end tests (in-process gateways
# and the real binary, with plugins built for wasm32-wasip2 by the test build), then a
# smoke run of every benchmark scenario (seconds each; it checks that each scenario runs
# and reports figures, never how fast).
#
# Everything builds with the release profile, the one scripts/serve-example.sh uses, so
# serving and testing share one build of wasmtime and the workspace.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -- NAME      # arguments go to `cargo test`, and the smoke is skipped
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-tests.sh
cargo test --release --workspace "$@"
if [ $# -eq 0 ]; then
    BENCH_PREBUILT=1 scripts/bench.sh --smoke
fi
