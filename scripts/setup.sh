#!/usr/bin/env bash
# Installs what building wsgate needs beyond a stock Rust toolchain: the wasm32-wasip2
# target for plugins. Safe to run again. What only the tests need is in
# scripts/setup-tests.sh.
set -euo pipefail

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is required to add the wasm32-wasip2 target (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target" >&2
    rustup target add wasm32-wasip2
fi
