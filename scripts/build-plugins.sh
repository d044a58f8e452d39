#!/usr/bin/env bash
# Builds every plugin (the examples and the testing ones) for wasm32-wasip2 into
# target/plugins/wasm32-wasip2/release/, where examples/wsgate.toml and bench/wsgate.toml
# expect them. The build itself is tests/plugins/build.rs, the same one the tests use, so
# serving and testing build the plugins once between them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "build-plugins: building the plugins for wasm32-wasip2 (about a minute the first time)" >&2
cargo build --release -p wsgate-test-plugins
