#!/usr/bin/env bash
# Builds the JavaScript and Python example plugins into components for wsgate, against
# the repository's WIT (wit/, world `route-handler`), into target/plugins/polyglot/:
#   echo_js.wasm, chat_js.wasm   componentize-js, from plugins/js/{echo,chat}
#   echo_py.wasm, chat_py.wasm   componentize-py, from plugins/py/{echo,chat}
# examples/polyglot.toml serves them. Runs scripts/setup-polyglot.sh first (the
# toolchains, into plugins/js/node_modules and target/polyglot-py). A component newer
# than all of its sources is not built again. Also (re)generates, when the WIT changed:
# the WIT's TypeScript declarations (plugins/js/types, for wsgate.d.ts) and the Python
# bindings (target/polyglot-py/bindings, for editors and type checkers), and type-checks
# the JavaScript plugins with tsc.
#
# First build: 1 to 1.5 minutes on 2 cores (each JS component takes 15-35 s of one core,
# each Python one ~12 s on both); nothing to do: under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "build-polyglot: $*" >&2; }

scripts/setup-polyglot.sh

world=route-handler
out=target/plugins/polyglot
js=plugins/js
py=plugins/py
venv=target/polyglot-py
mkdir -p "$out"

# stale OUT SOURCE...: OUT is missing or some SOURCE (file or directory tree) is newer.
stale() {
    local target=$1
    shift
    [ ! -e "$target" ] || [ -n "$(find "$@" -newer "$target" -print -quit)" ]
}

# The WIT's declarations for TypeScript (jco guest-types; see tools/guest-types.mjs).
if stale "$js/types/route-handler.d.ts" wit/*.wit "$js/package-lock.json"; then
    say "generating $js/types from wit/ (jco guest-types)"
    rm -rf "$js/types"
    node "$js/tools/guest-types.mjs" wit "$world" "$js/types"
fi
# The Python bindings: componentize-py generates its own while building; these are the
# same modules, for editors and type checkers.
if stale "$venv/bindings/wit_world/__init__.py" wit/*.wit "$venv/bin/componentize-py"; then
    say "generating $venv/bindings from wit/ (componentize-py bindings)"
    rm -rf "$venv/bindings"
    "$venv/bin/componentize-py" -d wit -w "$world" bindings "$venv/bindings"
fi

# Type-check the JavaScript plugins against wsgate.d.ts and the WIT's declarations.
stamp=$out/.js-typecheck
if stale "$stamp" "$js/echo" "$js/chat" "$js/wsgate.js" "$js/wsgate.d.ts" "$js/tsconfig.json" "$js/types"; then
    say "type-checking the JavaScript plugins (tsc -p $js)"
    "$js/node_modules/.bin/tsc" -p "$js"
    touch "$stamp"
fi

# Each build runs in the background with its log in $out/<name>.log; written to a
# temporary file and moved into place, so a failed build never leaves a fresh-looking
# component. The two of a language run side by side (componentize-js uses one core).
pids=()
names=()
start() {
    local name=$1
    shift
    say "building $out/$name.wasm"
    "$@" >"$out/$name.log" 2>&1 &
    pids+=("$!")
    names+=("$name")
}
finish() {
    local failed=0 i
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            mv "$out/${names[$i]}.wasm.tmp" "$out/${names[$i]}.wasm"
            say "built $out/${names[$i]}.wasm ($(du -h "$out/${names[$i]}.wasm" | cut -f1))"
        else
            say "error: ${names[$i]} failed; its output ($out/${names[$i]}.log):"
            cat "$out/${names[$i]}.log" >&2
            rm -f "$out/${names[$i]}.wasm.tmp"
            failed=1
        fi
    done
    pids=()
    names=()
    return "$failed"
}

for plugin in echo chat; do
    name=${plugin}_js
    if stale "$out/$name.wasm" "$js/$plugin" "$js/wsgate.js" "$js/package-lock.json" wit/*.wit; then
        # `-d http fetch-event`: the world imports no wasi:http, and the gateway links it
        # only for plugins granted outbound hosts; no --aot (weval is downloaded at build
        # time, and nothing here may download).
        start "$name" "$js/node_modules/.bin/componentize-js" "$js/$plugin/$plugin.js" \
            --wit wit --world-name "$world" --disable http fetch-event --out "$out/$name.wasm.tmp"
    else
        say "$out/$name.wasm is up to date"
    fi
done
finish

for plugin in echo chat; do
    name=${plugin}_py
    if stale "$out/$name.wasm" "$py/$plugin" "$py/wsgate_helpers.py" "$venv/bin/componentize-py" wit/*.wit; then
        # Built from a copy of just its files: componentize-py takes whole directories
        # from its path, and the interpreter it runs writes __pycache__ next to them.
        stage=$venv/stage/$plugin
        rm -rf "$stage"
        mkdir -p "$stage"
        cp "$py/wsgate_helpers.py" "$py/$plugin/"*.py "$stage/"
        start "$name" "$venv/bin/componentize-py" -d wit -w "$world" componentize "$plugin" \
            -p "$stage" -o "$out/$name.wasm.tmp"
    else
        say "$out/$name.wasm is up to date"
    fi
done
finish
