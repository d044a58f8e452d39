#!/usr/bin/env bash
# Runs the example backend (examples/backend/server.py) on 127.0.0.1:7070: the HTTP side
# of the routes /demo/aws, /demo/yandex and /demo/west in examples/wsgate.toml. Run the
# gateway beside it with scripts/serve-example.sh.
#
# It needs Python 3 and boto3, which scripts/setup-py.sh installs into target/py (the
# virtual environment the tests use). Extra arguments go to server.py: `--port 0` picks a
# free port, `--management-url URL` names the gateway's admin listener (default
# http://127.0.0.1:9090), `--key K` the bearer key for Yandex's API (default demo-key).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-py.sh
exec target/py/bin/python examples/backend/server.py "$@"
