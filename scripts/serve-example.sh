#!/usr/bin/env bash
# Builds the plugins and the gateway, then runs the gateway on examples/wsgate.toml:
# WebSocket on 127.0.0.1:8080, management API on 127.0.0.1:9090. Extra arguments go to
# `wsgate serve`. Log level: WSGATE_LOG (default info).
#
# From a fresh clone the build takes about 10 minutes on 2 cores (wasmtime and Cranelift
# are most of it); afterwards it takes seconds. The tests build with the same release
# profile, so running them afterwards reuses most of this build.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "serve-example: $*" >&2; }

say "step 1/3: the wasm32-wasip2 target"
scripts/setup.sh
if [ ! -x target/release/wsgate ]; then
    say "step 2/3: building the gateway and the plugins (release; the first build takes about 10 minutes on 2 cores)"
else
    say "step 2/3: building the gateway and the plugins (release; seconds when little changed)"
fi
# One cargo run: the plugins' build script (tests/plugins) runs while the gateway's
# dependencies compile.
cargo build --release -p wsgate -p wsgate-test-plugins
say "step 3/3: serving examples/wsgate.toml (WebSocket 127.0.0.1:8080, admin 127.0.0.1:9090)"
exec target/release/wsgate serve --config examples/wsgate.toml "$@"
