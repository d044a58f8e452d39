#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end tests (in-process gateways
# and the real binary, with plugins built for wasm32-wasip2 by the test build, and the
# JavaScript and Python plugins by scripts/build-polyglot.sh), then a
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
# The JavaScript and Python plugins (tests/e2e/polyglot.rs): their toolchains install
# into the repository, and an up-to-date component is not built again.
scripts/build-polyglot.sh
cargo test --release --workspace --no-run
# Their first compilation by the gateway (seconds each, 12-18 MB components) happens
# here, once, into the tests' compile cache, instead of in tests running side by side.
echo "test: compiling the JavaScript and Python plugins into the tests' compile cache" >&2
XDG_CACHE_HOME="${CARGO_TARGET_DIR:-target}/tmp" "${CARGO_TARGET_DIR:-target}/release/wsgate" check \
    --config examples/polyglot.toml >&2
cargo test --release --workspace "$@"
if [ $# -eq 0 ]; then
    BENCH_PREBUILT=1 scripts/bench.sh --smoke
fi
