#!/usr/bin/env bash
# Installs the Python packages wsgate's scripts use into a virtual environment under
# target/py (rebuilt when missing, never global): boto3, for the AWS SDK tests and the
# example backend (examples/backend/), and the AWS CLI, for the tests and the README.
# scripts/setup-tests.sh and scripts/serve-backend.sh run it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py
if ! "$venv/bin/python" -c 'import boto3' >/dev/null 2>&1 || [ ! -x "$venv/bin/aws" ]; then
    echo "setup: installing boto3 and awscli into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check boto3 awscli
fi
