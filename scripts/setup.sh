#!/usr/bin/env bash
# Installs what building wsgate needs beyond a stock Rust toolchain: the wasm32-wasip2
# target for plugins. Safe to run again.
set -euo pipefail

if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is required to add the wasm32-wasip2 target (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target" >&2
    rustup target add wasm32-wasip2
fi

# boto3 and the AWS CLI, for the tests that drive the management API with a real AWS
# SDK. They live in a virtual environment under target/, rebuilt when missing.
venv=target/py
if ! "$venv/bin/python" -c 'import boto3' >/dev/null 2>&1 || [ ! -x "$venv/bin/aws" ]; then
    echo "setup: installing boto3 and awscli into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check boto3 awscli
fi
