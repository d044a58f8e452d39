#!/usr/bin/env bash
# Builds the gateway and the JavaScript and Python plugins, then runs the gateway on
# examples/polyglot.toml: WebSocket on 127.0.0.1:8080 (/demo/echo-js, /demo/chat-js/{room},
# /demo/echo-py, /demo/chat-py/{room}), management API on 127.0.0.1:9090. Extra arguments
# go to `wsgate serve`. Log level: WSGATE_LOG (default info).
#
# Needs Node.js (18+) and Python 3 (3.10+) besides Rust: scripts/setup-polyglot.sh installs
# componentize-js and componentize-py into the repository (plugins/js/node_modules,
# target/polyglot-py). The Rust plugins are not needed. First run: the gateway's release
# build (minutes from a fresh clone), the toolchains (about a minute) and the four
# components (1 to 1.5 minutes on 2 cores); the first start then compiles the
# components (30 s on 2 idle cores) into the compile cache, and later starts read them
# from it (0.5-0.7 s).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "serve-polyglot: $*" >&2; }

if [ ! -x target/release/wsgate ]; then
    say "step 1/3: building the gateway (release; the first build takes several minutes on 2 cores)"
else
    say "step 1/3: building the gateway (release; seconds when little changed)"
fi
cargo build --release -p wsgate
say "step 2/3: the JavaScript and Python plugins (scripts/build-polyglot.sh)"
scripts/build-polyglot.sh
say "step 3/3: serving examples/polyglot.toml (WebSocket 127.0.0.1:8080, admin 127.0.0.1:9090)"
exec target/release/wsgate serve --config examples/polyglot.toml "$@"
