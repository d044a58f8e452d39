#!/usr/bin/env bash
# Installs the toolchains that build wsgate plugins in JavaScript and Python, into the
# repository's own folders, never globally, and only what is missing (quiet when all is
# there):
#   - componentize-js and jco: `npm ci` in plugins/js from its committed lock file, into
#     plugins/js/node_modules (gitignored);
#   - componentize-py: a virtual environment in target/polyglot-py, with pip and an
#     exact version.
# scripts/build-polyglot.sh runs it. Needs node and npm (Node.js 18 or later) and python3
# (3.10 or later, with its venv module).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "setup-polyglot: $*" >&2; }
die() { say "error: $*"; exit 1; }

COMPONENTIZE_PY_VERSION=0.25.1   # keep in step with plugins/py (the bindings it generates)
venv=target/polyglot-py
js=plugins/js

command -v node >/dev/null 2>&1 || die "node not found: install Node.js 18 or later (JavaScript plugins are built with componentize-js)"
command -v npm >/dev/null 2>&1 || die "npm not found: install it with Node.js (it installs componentize-js from plugins/js/package-lock.json)"
command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python 3.10 or later (Python plugins are built with componentize-py)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: componentize-js needs Node.js 18 or later"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$(python3 --version 2>&1) is too old: componentize-py needs Python 3.10 or later"

# JavaScript: npm ci writes node_modules/.package-lock.json; a lock file newer than it
# means the pins moved since the last install.
if [ ! -f "$js/node_modules/.package-lock.json" ] \
    || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ] \
    || [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
    say "installing componentize-js and jco into $js/node_modules (npm ci, from $js/package-lock.json)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

# Python: the venv's componentize-py must be exactly the pinned version.
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv (pip)"
    if [ ! -x "$venv/bin/pip" ]; then
        python3 -m venv "$venv" \
            || die "python3 -m venv failed: install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
fi
