#!/usr/bin/env bash
# Installs what the tests need beyond building wsgate, into the repository's own folders
# (rebuilt when missing, never global):
# - boto3 and the AWS CLI, for the tests that drive the management API with a real AWS
#   SDK, in a virtual environment under target/py (scripts/setup-py.sh);
# - Node.js `ws`, the benchmark baseline, under bench/node/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-py.sh

if ! command -v node >/dev/null 2>&1; then
    echo "setup: Node.js is required for the benchmark baseline (the Debian package nodejs)" >&2
    exit 1
fi
if [ ! -d bench/node/node_modules/ws ]; then
    echo "setup: installing the Node.js ws baseline into bench/node" >&2
    npm ci --prefix bench/node --no-audit --no-fund --silent
fi
