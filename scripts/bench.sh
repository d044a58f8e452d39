#!/usr/bin/env bash
# Runs the benchmark scenarios against three servers started here, side by side in one
# run: the raw tokio-tungstenite echo (the ceiling), Node.js `ws` (what teams would pick
# instead) and wsgate with the echo plugin. Writes bench/RESULTS.md.
#
#   scripts/bench.sh                 # 5 s per measurement
#   BENCH_SECONDS=1 scripts/bench.sh # a quick smoke
#
# Scenarios: S1 echo 64 B over 100 connections; S2 echo 16 KiB over 50 connections;
# S3 connect, one message, close, over 50 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-5}

scripts/build-plugins.sh
cargo build --release -p wsgate -p wsgate-bench
if [ ! -d bench/node/node_modules/ws ]; then
    npm ci --prefix bench/node --no-audit --no-fund --silent
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a server; waits (boundedly) for its `listening ws=ADDR` line.
start() {
    local name=$1; shift
    "$@" > "$work/$name.out" 2> "$work/$name.err" &
    pids+=($!)
    echo $! > "$work/$name.pid"
    for _ in $(seq 1 500); do
        if grep -q "listening ws=" "$work/$name.out"; then
            sed -n 's/^listening ws=//p' "$work/$name.out" | head -1 > "$work/$name.addr"
            return
        fi
        sleep 0.02
    done
    echo "bench: $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}

start raw target/release/wsgate-bench echo-server
start node node bench/node/echo.js
start wsgate target/release/wsgate serve --config bench/wsgate.toml

url() {
    case $1 in
        wsgate) echo "ws://$(cat "$work/wsgate.addr")/bench/echo" ;;
        *) echo "ws://$(cat "$work/$1.addr")/" ;;
    esac
}

results=bench/results.jsonl
: > "$results"
run() {
    local scenario=$1 server=$2; shift 2
    echo "bench: $scenario on $server" >&2
    target/release/wsgate-bench "$@" --url "$(url "$server")" --seconds "$seconds" \
        --pid "$(cat "$work/$server.pid")" --label "$scenario $server" --json >> "$results"
}
for server in raw node wsgate; do run S1 "$server" load --connections 100 --size 64; done
for server in raw node wsgate; do run S2 "$server" load --connections 50 --size 16384; done
for server in raw node wsgate; do run S3 "$server" churn --connections 50; done

python3 - "$results" "$seconds" > bench/RESULTS.md <<'PY'
import json, os, platform, subprocess, sys, datetime
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"
print("# Benchmark results\n")
print(f"Produced by `scripts/bench.sh` on {datetime.date.today()}, {sys.argv[2]} s per measurement, "
      f"on {os.cpu_count()} cores ({platform.machine()}), {version(['rustc', '--version'])}, node {version(['node', '--version'])}. "
      "All servers and the load client share this machine; compare ratios, not absolute numbers.\n")
print("| scenario | server | rate | MB/s | p50 µs | p99 µs | server RSS KiB | server CPU | vs raw | vs node |")
print("|---|---|---|---|---|---|---|---|---|---|")
for scenario in ["S1", "S2", "S3"]:
    raw = by.get(f"{scenario} raw"); node = by.get(f"{scenario} node")
    for server in ["raw", "node", "wsgate"]:
        r = by.get(f"{scenario} {server}")
        if not r:
            continue
        s = r.get("server", {})
        ratio = lambda base: f"{r['per_sec'] / base['per_sec']:.2f}x" if base else "-"
        print(f"| {scenario} | {server} | {r['per_sec']:.0f} {r['unit']}/s | {r['mb_per_sec']:.1f} | "
              f"{r['latency_us']['p50']} | {r['latency_us']['p99']} | {s.get('rss_kib', '-')} | "
              f"{s.get('cpu_percent', 0):.0f}% | {ratio(raw)} | {ratio(node)} |")
print("\nS1: echo 64 B, 100 connections, closed loop. S2: echo 16 KiB, 50 connections. "
      "S3: connect, one message, close, 50 workers. Latency is per message (S1, S2) or per cycle (S3).")
PY
cat bench/RESULTS.md
