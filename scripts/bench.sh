#!/usr/bin/env bash
# Runs every benchmark scenario against the servers it starts here, side by side in one
# run: the raw tokio-tungstenite echo (the ceiling), Node.js `ws` (what teams would pick
# instead) and wsgate (bench/wsgate.toml); for S9 also an HTTP Lambda backend and the
# native relay in front of it. Writes bench/RESULTS.md, bench/results.svg and the table in
# README.md.
#
#   scripts/bench.sh                  # the full run: 5 s per measurement, release build
#   BENCH_SECONDS=2 scripts/bench.sh  # shorter measurements
#   BENCH_REPEATS=1 scripts/bench.sh  # S1-S3, S7, S9, S10, S11 and S12 once each instead of
#                                     # three times
#   BENCH_ONLY=S12 scripts/bench.sh   # S12 alone: writes $out/results-S12.jsonl and
#                                     # RESULTS-S12.md, and leaves the rest alone
#   scripts/bench.sh --smoke          # seconds, small sizes, results under
#                                     # target/bench-smoke: proves every scenario runs
#
# Scenarios (bench/README.md says what each measures and why):
#   S1 echo 64 B, 100 connections     S5 broadcast to 10,000 connections in a room
#   S2 echo 16 KiB, 50 connections    S6 management POST @connections, keep-alive
#   S3 connect/message/close churn    S7 tenant A's echo p99 while tenant B burns CPU
#   S4 RSS per idle connection, 15k   S8 start-up with 50 plugins, cold and warm cache
#      (and after one 128 KiB message) S9 echo through the integration plugin and an HTTP
#                                        Lambda backend, vs a native relay to the same one
#   S11 tenant fairness: tenant A's 4 echo connections while tenant B floods from 200,
#       with no quota and with a tenant_message_rate
#   S10 cluster mode: two nodes and a Redis; management POSTs across nodes vs on one node,
#       and a broadcast to 10,000 connections split over both nodes vs all on one
#   S12 the echo plugin in Rust, JavaScript and Python (bench/polyglot.toml): component
#       size, cold compile, load from the compile cache, a new instance, per-message cost,
#       echo throughput (64 B, 100 connections) and memory per warm instance
#
# S10 needs redis-server (scripts/setup-tests.sh, run below, installs it); it starts its
# own on a free loopback port and stops it afterwards. S12 needs Node.js and Python 3.10+:
# it runs scripts/build-polyglot.sh, which installs componentize-js and componentize-py
# into the repository when missing and builds the components (1 to 1.5 minutes the first
# time; under a second when they are up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true
only=${BENCH_ONLY:-}
case $only in
    "" | S12) ;;
    *) echo "bench: BENCH_ONLY=$only: the scenario that runs alone is S12" >&2; exit 1 ;;
esac
# s12_instances: the warm instances S12's memory figure is taken over (pool_size of
# bench/polyglot.toml); settle: seconds S12 waits before reading the gateway's RSS.
if $smoke; then
    seconds=0.5 warmup=0.2 idle=500 left_after=1 room=201 rounds=3 plugins=5 repeats=1
    s12_instances=2 settle=0.2
    out=target/bench-smoke
else
    seconds=${BENCH_SECONDS:-5} warmup=1 idle=15000 left_after=10 room=10001 rounds=20 plugins=50
    repeats=${BENCH_REPEATS:-3}
    s12_instances=8 settle=1
    out=bench
fi
mkdir -p "$out"

scripts/setup-tests.sh
# S10 runs its own Redis: say so now rather than after every other scenario.
[ -n "$only" ] || command -v redis-server >/dev/null 2>&1 || {
    echo "bench: S10 needs redis-server, which is not on PATH (scripts/setup-tests.sh installs it;" \
        "Debian/Ubuntu: apt-get install redis-server)" >&2
    exit 1
}
# The release profile. Run from scripts/test.sh (BENCH_PREBUILT=1), the smoke uses the
# binaries and plugins the test build just made (the gateway for the end-to-end tests,
# wsgate-bench for its own test), rather than building them again with other features.
if [ "${BENCH_PREBUILT:-0}" != 1 ]; then
    cargo build --release -p wsgate -p wsgate-bench -p wsgate-test-plugins
fi
bench=target/release/wsgate-bench
gateway=target/release/wsgate
# The servers and the client hold up to 15,000 sockets each.
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a server; waits (boundedly) for its `listening KIND=ADDR` line, the last it
# prints. Each `listening X=ADDR` line's address lands in $work/NAME.X.
start() {
    local name=$1 kind=$2; shift 2
    # Emptied here, not only by the redirection below: that happens in the child, and
    # until it does a restarted server's old `listening` lines would pass for its new.
    : > "$work/$name.out"
    "$@" > "$work/$name.out" 2> "$work/$name.err" &
    pids+=($!)
    echo $! > "$work/$name.pid"
    for _ in $(seq 1 1500); do
        if grep -q "listening $kind=" "$work/$name.out"; then
            sed -n 's/^listening \([a-z]*\)=\(.*\)/\1 \2/p' "$work/$name.out" |
                while read -r what addr; do echo "$addr" > "$work/$name.$what"; done
            return
        fi
        sleep 0.02
    done
    echo "bench: $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}
stop() {
    kill "$(cat "$work/$1.pid")" 2>/dev/null || true
    wait "$(cat "$work/$1.pid")" 2>/dev/null || true
}
pid() { cat "$work/$1.pid"; }

# S12: the echo plugin in Rust (plugins/echo), JavaScript (plugins/js/echo,
# componentize-js) and Python (plugins/py/echo, componentize-py), bench/polyglot.toml.
# Per language:
#   - size: the component file's bytes;
#   - cold compile and load from cache: the compile time `wsgate check` reports for the
#     plugin (its table's `compile` column) on a config holding that plugin alone, first
#     with an empty compile cache (`from compiled`: compiling and storing it), then with
#     the cache it filled (`from cache`: reading and deserialising it); $repeats times;
#   - memory per warm instance: on a fresh gateway, the growth of its RSS while
#     $s12_instances copies of the plugin (the same component, plugins mem1, mem2, ...)
#     each get one instance, which the pool then keeps: one connection each in turn,
#     echoing for 50 ms. mem0 goes first, outside the count, so that what the first
#     instance of a component alone brings (its code paged in) is not charged to each;
#   - per-message cost: one connection, closed loop, on /echo (a warm instance): the
#     client's round trip and the plugin event's mean time, from the gateway's
#     wsgate_plugin_event_duration_seconds (sum and count of its message events over the
#     run, warm-up included);
#   - a new instance: the same on /fresh (pool_size = 0: every event makes an instance
#     and drops it); its mean event time minus /echo's;
#   - throughput: `load` 64 B on /echo, closed loop, over 8 connections (the instances
#     the pool keeps) then over 100, the three taking turns $repeats times, with the
#     gateway's CPU per message (its CPU time over the window / messages).
# Every load checks that each reply is the echo (--expect-echo).
#
# The smoke skips cold compiles of the JavaScript and Python components (10-25 s of both
# cores each): their compile cache is the tests' (target/tmp/wsgate), which
# scripts/test.sh fills with them before the tests; run alone, the smoke compiles them
# there the first time (that run reports them cold) and reads them from it afterwards.
# The Rust echo is cold-compiled every time, into a fresh folder.
s12_langs=(rust js py)
s12_wasm() {
    case $1 in
        rust) echo target/plugins/wasm32-wasip2/release/echo.wasm ;;
        js) echo target/plugins/polyglot/echo_js.wasm ;;
        py) echo target/plugins/polyglot/echo_py.wasm ;;
    esac
}
# s12_check LANG CACHE_DIR: `wsgate check` on LANG's echo alone with its compile cache in
# CACHE_DIR; prints the plugin's row as "ORIGIN MILLISECONDS".
s12_check() {
    local config=$work/s12-check-$1.toml
    printf '[listen]\nws = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n\n[compile]\ncache_dir = "%s"\n\n[tenants.%s.plugins.echo]\npath = "%s"\n\n[tenants.%s.routes."/echo"]\nplugin = "echo"\n' \
        "$2" "$1" "$PWD/$(s12_wasm "$1")" "$1" > "$config"
    "$gateway" check --config "$config" | python3 -c '
import re, sys
for line in sys.stdin:
    cells = re.split(r"\s{2,}", line.strip())
    if len(cells) >= 5 and cells[1] == "echo":
        took, unit = cells[3].split()
        assert unit == "ms", line
        print(cells[4], took)
        sys.exit(0)
sys.exit("bench: no row for the plugin in the table of wsgate check")'
}
# s12_compiled LABEL LANG CACHE_DIR WANT: one s12_check, written to the results as LABEL
# when its origin is WANT; otherwise a failure, unless ALLOWED (a fourth argument) names
# that origin too, when nothing is written.
s12_compiled() {
    local row origin ms
    row=$(s12_check "$2" "$3")
    read -r origin ms <<< "$row"
    if [ "$origin" = "$4" ]; then
        printf '{"label":"%s","unit":"compile","origin":"%s","ms":%s,"bytes":%s}\n' \
            "$1" "$origin" "$ms" "$(stat -c %s "$(s12_wasm "$2")")" >> "$results"
        echo "bench: $1: $ms ms" >&2
    elif [ "$origin" != "${5:-}" ]; then
        echo "bench: $1: wsgate check said \"from $origin\", not \"$4\"" >&2
        exit 1
    fi
}
# The gateway's /metrics, for the event times.
s12_metrics() {
    curl -sf --max-time 5 -H "Authorization: Bearer bench-ops" "http://$(cat "$work/s12.admin")/metrics"
}
# s12_timed LABEL TENANT PLUGIN LOAD-ARGS...: `timed`, plus the plugin's message events
# over the run from /metrics: their count and mean time in microseconds.
s12_timed() {
    local label=$1 tenant=$2 plugin=$3
    shift 3
    echo "bench: $label" >&2
    s12_metrics > "$work/s12-before.prom"
    "$bench" "$@" --seconds "$seconds" --warmup "$warmup" --pid "$(pid s12)" \
        --label "$label" --json > "$work/s12-run.json"
    s12_metrics > "$work/s12-after.prom"
    python3 - "$work/s12-run.json" "$work/s12-before.prom" "$work/s12-after.prom" "$tenant" "$plugin" \
        >> "$results" <<'EOF'
import json, sys
run, before, after, tenant, plugin = sys.argv[1:]
series = f'{{tenant="{tenant}",plugin="{plugin}",event="message"}}'
def read(path):
    values = {}
    for line in open(path):
        for what in ("sum", "count"):
            if line.startswith(f"wsgate_plugin_event_duration_seconds_{what}{series} "):
                values[what] = float(line.split()[-1])
    return values
b, a = read(before), read(after)
row = json.loads(open(run).read())
row["events"] = int(a["count"] - b.get("count", 0))
row["event_us"] = 1e6 * (a["sum"] - b.get("sum", 0)) / row["events"]
print(json.dumps(row))
EOF
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$(pid "$1")/status"; }
s12() {
    echo "bench: S12 JavaScript and Python components (scripts/build-polyglot.sh)" >&2
    scripts/build-polyglot.sh
    local cache lang dir i k ws before after
    if $smoke; then
        cache=${CARGO_TARGET_DIR:-target}/tmp/wsgate
        case $cache in /*) ;; *) cache=$PWD/$cache ;; esac
    else
        cache=$work/s12-cache
    fi
    # Compile: each language cold then from the cache, $repeats times. The full run's
    # first cold compiles fill the cache the gateway then starts from; the others go to
    # a folder emptied each time.
    for i in $(seq "$repeats"); do
        for lang in "${s12_langs[@]}"; do
            if $smoke && [ "$lang" != rust ]; then
                dir=$cache
                s12_compiled "S12 cold $lang" "$lang" "$dir" compiled cache
            else
                dir=$work/s12-cold
                [ "$i" = 1 ] && ! $smoke && dir=$cache
                rm -rf "$work/s12-cold"
                s12_compiled "S12 cold $lang" "$lang" "$dir" compiled
            fi
            s12_compiled "S12 cached $lang" "$lang" "$dir" cache
        done
    done
    rm -rf "$work/s12-cold"

    # The gateway, from the cache filled above, with mem0..mem$s12_instances beside each
    # echo.
    sed -e "s#= \"\.\./#= \"$PWD/#" bench/polyglot.toml > "$work/polyglot.toml"
    printf '\n[compile]\ncache_dir = "%s"\n' "$cache" >> "$work/polyglot.toml"
    for lang in "${s12_langs[@]}"; do
        for k in $(seq 0 "$s12_instances"); do
            printf '\n[tenants.%s.plugins.mem%s]\npath = "%s"\nlimits = { memory_bytes = 67108864, pool_memory_bytes = 33554432, pool_size = 8, timeout = "1s" }\n\n[tenants.%s.routes."/mem%s"]\nplugin = "mem%s"\n' \
                "$lang" "$k" "$PWD/$(s12_wasm "$lang")" "$lang" "$k" "$k" >> "$work/polyglot.toml"
        done
    done
    start s12 admin "$gateway" serve --config "$work/polyglot.toml"
    ws=$(cat "$work/s12.ws")

    # Memory first, on the fresh gateway.
    for lang in "${s12_langs[@]}"; do
        echo "bench: S12 memory $lang" >&2
        for k in $(seq 0 "$s12_instances"); do
            "$bench" load --url "ws://$ws/$lang/mem$k" --connections 1 --seconds 0.05 --warmup 0 \
                --expect-echo --json > /dev/null
            if [ "$k" = 0 ]; then
                sleep "$settle"
                before=$(rss_kib s12)
            fi
        done
        sleep "$settle"
        after=$(rss_kib s12)
        printf '{"label":"S12 memory %s","unit":"memory","instances":%s,"rss_before_kib":%s,"rss_after_kib":%s}\n' \
            "$lang" "$s12_instances" "$before" "$after" >> "$results"
    done

    # One connection on a warm instance, then on a new one per event; the languages
    # taking turns, $repeats times.
    for _ in $(seq "$repeats"); do
        for lang in "${s12_langs[@]}"; do
            for plugin in echo fresh; do
                s12_timed "S12 $plugin $lang" "$lang" "$plugin" load --url "ws://$ws/$lang/$plugin" \
                    --connections 1 --size 64 --expect-echo
            done
        done
    done
    # Throughput, 64 B, closed loop: over 8 connections (as many as the pool keeps
    # instances), then over 100 (as S1), which starts with the pool the first run filled.
    for _ in $(seq "$repeats"); do
        for lang in "${s12_langs[@]}"; do
            for connections in 8 100; do
                s12_timed "S12 load-$connections $lang" "$lang" echo load --url "ws://$ws/$lang/echo" \
                    --connections "$connections" --size 64 --expect-echo
            done
        done
    done
    stop s12
}

if [ "$only" = S12 ]; then
    results=$out/results-S12.jsonl
    : > "$results"
    started=$SECONDS
    s12
    echo "bench: S12 took $((SECONDS - started)) s" >&2
    python3 bench/report.py "$results" "$out" "$seconds" --only S12 $($smoke && echo --smoke)
    exit 0
fi

# S9's Lambda backend runs for the whole bench: the gateway's config names its address.
# bench/wsgate.toml says 127.0.0.1:7071 (so it also runs by hand beside
# `wsgate-bench lambda-backend --listen 127.0.0.1:7071`); here that becomes the port the
# backend got, and the plugin paths, relative to bench/, become absolute.
start lambda http "$bench" lambda-backend --listen 127.0.0.1:0
lambda=$(cat "$work/lambda.http")
config=$work/wsgate.toml
sed -e "s#= \"\.\./#= \"$PWD/#" -e "s#127\.0\.0\.1:7071#$lambda#g" bench/wsgate.toml > "$config"
start_all() {
    start raw ws "$bench" echo-server
    start node ws node bench/node/echo.js
    start wsgate admin "$gateway" serve --config "$config"
}
url() {
    case $1 in
        wsgate) echo "ws://$(cat "$work/wsgate.ws")/bench/echo" ;;
        *) echo "ws://$(cat "$work/$1.ws")/" ;;
    esac
}

results=$out/results.jsonl
: > "$results"
timed() { # timed LABEL SERVER SUBCOMMAND ARGS...: a load-style measurement of SERVER
    local label=$1 server=$2; shift 2
    echo "bench: $label" >&2
    "$bench" "$@" --seconds "$seconds" --warmup "$warmup" --pid "$(pid "$server")" \
        --label "$label" --json >> "$results"
}

# S4 first, on fresh processes, so earlier load has not grown their heaps. Each server's
# RSS is read again $left_after s after the connections closed, with no traffic since:
# what it gives back after a burst.
start_all
for server in raw node wsgate; do
    echo "bench: S4 on $server" >&2
    "$bench" idle --url "$(url "$server")" --connections "$idle" --pid "$(pid "$server")" \
        --left-after "$left_after" --label "S4 $server" --json >> "$results"
done
# The same after one maximum-size message per connection, on a fresh gateway: what a
# connection keeps of its largest message (target: within 2x the fresh figure).
stop wsgate
start wsgate admin "$gateway" serve --config "$config"
echo "bench: S4 on wsgate after a 128 KiB message" >&2
"$bench" idle --url "$(url wsgate)" --connections "$idle" --pid "$(pid wsgate)" \
    --message-bytes 131072 --left-after "$left_after" --label "S4 wsgate large" --json >> "$results"

# S1-S3 run $repeats times, the servers alternating, and the report takes each one's
# median: on a shared machine one window can be unlucky for one server.
for _ in $(seq "$repeats"); do
    for server in raw node wsgate; do timed "S1 $server" "$server" load --url "$(url "$server")" --connections 100 --size 64; done
    for server in raw node wsgate; do timed "S2 $server" "$server" load --url "$(url "$server")" --connections 50 --size 16384; done
    for server in raw node wsgate; do timed "S3 $server" "$server" churn --url "$(url "$server")" --connections 50; done
done

# S5: the fan-out plugin, once with the broadcast host call and once calling `send` per
# recipient; and the raw server relaying to every other connection (the ceiling).
ws=$(cat "$work/wsgate.ws")
for variant in room room-each; do
    echo "bench: S5 $variant" >&2
    "$bench" broadcast --url "ws://$ws/bench/$variant/s5" --connections "$room" --rounds "$rounds" \
        --label "S5 $variant" --json >> "$results"
done
start raw-room ws "$bench" echo-server --room
echo "bench: S5 raw" >&2
"$bench" broadcast --url "ws://$(cat "$work/raw-room.ws")/" --connections "$room" --rounds "$rounds" \
    --label "S5 raw" --json >> "$results"
stop raw-room

# S6: the management API against an HTTP server that does nothing but answer.
start http http "$bench" http-server
timed "S6 http" http manage --url "http://$(cat "$work/http.http")/bench" --connections 16 --size 64
timed "S6 wsgate" wsgate manage --url "http://$(cat "$work/wsgate.admin")/bench" --connections 16 --size 64 \
    --ws-url "ws://$ws/bench/id" --bearer bench-key
stop http

# S7: tenant bench's echo, closed loop over 10 connections, quiet, then while tenant
# noisy's plugin spins for its whole time limit on every message; $repeats times, taking
# turns. (Closed loop: with a fixed rate the client's 1 ms timer granularity would pad
# both runs' latency alike.)
s7=(load --url "ws://$ws/bench/echo" --connections 10 --size 64)
burn_seconds=$(python3 -c "print($seconds + $warmup + 2)")
for _ in $(seq "$repeats"); do
    timed "S7 quiet" wsgate "${s7[@]}"
    "$bench" load --url "ws://$ws/noisy/burn" --payload loop --connections 4 \
        --seconds "$burn_seconds" --warmup 0 --json > /dev/null 2>&1 &
    burner=$!
    timed "S7 noisy" wsgate "${s7[@]}"
    wait "$burner" || true
done

# S11: fairness between tenants. Tenant bench's echo over 4 connections, closed loop,
# alone; then while tenant flood's echo is driven as hard as 200 connections can (no
# quota: the tenants' fair share alone); then while tenant capped, the same but with a
# tenant_message_rate, is driven the same way. $repeats times, taking turns.
s11=(load --url "ws://$ws/bench/echo" --connections 4 --size 64)
flooders=200
$smoke && flooders=20
for _ in $(seq "$repeats"); do
    timed "S11 quiet" wsgate "${s11[@]}"
    for tenant in flood capped; do
        "$bench" load --url "ws://$ws/$tenant/echo" --connections "$flooders" --size 64 \
            --seconds "$burn_seconds" --warmup 0 --json > /dev/null 2>&1 &
        flooder=$!
        timed "S11 $tenant" wsgate "${s11[@]}"
        wait "$flooder" || true
    done
done

# S9: the integration plugin (route /bench/aws) forwarding every message to the Lambda
# backend and sending back the answer's body, against the native relay doing the same
# with the same event, the same backend and one pooled client; 64 B, 50 connections,
# closed loop, $repeats times, taking turns. A reply other than the echo (e.g. the
# plugin's error frame) counts as an error, not a round trip.
start relay ws "$bench" echo-server --relay "http://$lambda/aws"
for _ in $(seq "$repeats"); do
    timed "S9 relay" relay load --url "$(url relay)" --connections 50 --size 64 --expect-echo
    timed "S9 wsgate" wsgate load --url "ws://$ws/bench/aws" --connections 50 --size 64 --expect-echo
done
stop relay

# The single-node servers are done: S10 and S8 get the cores.
for server in raw node wsgate lambda; do stop "$server"; done

# S10: cluster mode. Its own Redis (no persistence, an empty folder) on a free loopback
# port, and two gateway nodes, a and b, on bench/wsgate.toml with a [cluster] table.
# A free port is only free until someone binds it: if redis-server loses the race (it
# exits), try another.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start_redis() {
    mkdir -p "$work/redis"
    for _ in 1 2 3 4 5; do
        redis_port=$(free_port)
        : > "$work/redis.out"
        redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
            --dir "$work/redis" > "$work/redis.out" 2>&1 &
        pids+=($!)
        echo $! > "$work/redis.pid"
        for _ in $(seq 1 500); do
            if grep -q "Ready to accept connections" "$work/redis.out"; then return; fi
            kill -0 "$(pid redis)" 2>/dev/null || break
            sleep 0.02
        done
        if grep -q "Address already in use" "$work/redis.out"; then
            wait "$(pid redis)" 2>/dev/null || true
            continue
        fi
        echo "bench: redis-server did not start on 127.0.0.1:$redis_port:" >&2
        cat "$work/redis.out" >&2
        exit 1
    done
    echo "bench: redis-server found five free ports taken before it could bind them" >&2
    exit 1
}
# Waits (boundedly) until node $1's /health says OK: registered in Redis, inbox subscribed.
cluster_ready() {
    local health=""
    for _ in $(seq 1 500); do
        health=$(curl -s --max-time 1 "http://$(cat "$work/$1.admin")/health" || true)
        [ "$health" = OK ] && return
        sleep 0.02
    done
    echo "bench: node $1 did not join the cluster; /health said: ${health:-nothing}" >&2
    cat "$work/$1.err" >&2
    exit 1
}
start_redis
echo "bench: S10 Redis on 127.0.0.1:$redis_port" >&2
for node in a b; do
    cp "$config" "$work/cluster-$node.toml"
    printf '\n[cluster]\nredis_url = "redis://127.0.0.1:%s"\nnode_id = "%s"\n' \
        "$redis_port" "$node" >> "$work/cluster-$node.toml"
    start "node-$node" admin "$gateway" serve --config "$work/cluster-$node.toml"
done
for node in a b; do cluster_ready "node-$node"; done
a_ws=$(cat "$work/node-a.ws") b_ws=$(cat "$work/node-b.ws")
a_admin=$(cat "$work/node-a.admin") b_admin=$(cat "$work/node-b.admin")
# The management API with the WebSockets on node a, posted to through a's own admin
# listener (same-node, as S6) and through b's (cross-node: every post goes through
# Redis to a's inbox and back); then the fan-out plugin's broadcast to a room whose
# receivers are all on a, and to one whose receivers are split over a and b (the sender
# on a). $repeats times, taking turns; each broadcast run in a room of its own, so
# the connections of the one before, still closing, are not in it.
for _ in $(seq "$repeats"); do
    timed "S10 same-node" node-a manage --url "http://$a_admin/bench" --connections 16 --size 64 \
        --ws-url "ws://$a_ws/bench/id" --bearer bench-key
    timed "S10 cross-node" node-b manage --url "http://$b_admin/bench" --connections 16 --size 64 \
        --ws-url "ws://$a_ws/bench/id" --bearer bench-key
done
for i in $(seq "$repeats"); do
    echo "bench: S10 broadcast one node" >&2
    "$bench" broadcast --url "ws://$a_ws/bench/room/s10-one-$i" --connections "$room" \
        --rounds "$rounds" --label "S10 broadcast one node" --json >> "$results"
    echo "bench: S10 broadcast two nodes" >&2
    "$bench" broadcast --url "ws://$a_ws/bench/room/s10-two-$i" \
        --split-url "ws://$b_ws/bench/room/s10-two-$i" --connections "$room" \
        --rounds "$rounds" --label "S10 broadcast two nodes" --json >> "$results"
done
# What the nodes logged at warning level or above, for the reader of the log.
grep -hE ' (WARN|ERROR) ' "$work/node-a.err" "$work/node-b.err" | sed 's/^/bench: S10 node log: /' | tail -20 >&2 || true
for server in node-a node-b redis; do stop "$server"; done

# S8: start-up with many plugins, alone on the machine.
# S8 copies echo $plugins times; "S8 mix" starts six different plugins once each, to show
# what the function cache saves when the code really differs.
echo "bench: S8" >&2
"$bench" startup --gateway "$gateway" --plugin target/plugins/wasm32-wasip2/release/echo.wasm \
    --plugins "$plugins" --label S8 --json >> "$results"
echo "bench: S8 mix" >&2
mix=() kinds=0
for plugin in echo connection_id chat auth test_fanout test_hostile; do
    mix+=(--plugin "target/plugins/wasm32-wasip2/release/$plugin.wasm") kinds=$((kinds + 1))
done
"$bench" startup --gateway "$gateway" "${mix[@]}" --plugins "$kinds" --label "S8 mix" --json >> "$results"

# S12: the three languages' echo, alone on the machine (cold compiles take both cores).
s12

python3 bench/report.py "$results" "$out" "$seconds" $($smoke && echo --smoke)
