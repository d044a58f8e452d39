#!/usr/bin/env bash
# Runs the property tests over untrusted input (config text, route templates and paths,
# selection expressions) with many more cases than the test suite does, for a bounded
# time. Usage: scripts/fuzz.sh [CASES] [SECONDS]  (defaults: 20000 cases, 300 s)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
seconds=${2:-300}
PROPTEST_CASES=$cases timeout "$seconds" cargo test -p wsgate --lib fuzz:: -- --test-threads=2
