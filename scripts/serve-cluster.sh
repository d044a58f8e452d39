#!/usr/bin/env bash
# Builds the plugins and the gateway as scripts/serve-example.sh does, then runs the
# example cluster: Redis on 127.0.0.1:6379 (unless one already answers there) and three
# nodes sharing it, examples/cluster/node-{a,b,c}.toml: WebSocket 127.0.0.1:8081-8083,
# management API 127.0.0.1:9091-9093. Each log line starts with its node's name. Ctrl-C
# stops the nodes, then the Redis this script started. Log level: WSGATE_LOG (default
# info).
#
# It needs redis-server (Debian/Ubuntu: apt-get install redis-server, which
# scripts/setup-tests.sh does) unless a Redis already answers on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "serve-cluster: $*" >&2; }

# Whether a Redis answers PING on 127.0.0.1:6379.
redis_answers() {
    local line=""
    { exec 3<>/dev/tcp/127.0.0.1/6379; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 1 line <&3 || true
    exec 3<&-
    [ "${line%$'\r'}" = "+PONG" ]
}

# Whether something accepts connections on 127.0.0.1:$1.
accepts() { { exec 3<>"/dev/tcp/127.0.0.1/$1" && exec 3<&-; } 2>/dev/null; }

say "step 1/4: the wasm32-wasip2 target"
scripts/setup.sh
if [ ! -x target/release/wsgate ]; then
    say "step 2/4: building the gateway and the plugins (release; the first build takes about 10 minutes on 2 cores)"
else
    say "step 2/4: building the gateway and the plugins (release; seconds when little changed)"
fi
cargo build --release -p wsgate -p wsgate-test-plugins

nodes=()
redis=""
# Prefixes each line of a process's output with its name; Ctrl-C leaves it running so
# that the last lines of a shutdown still show.
label() { trap '' INT; exec sed -u "s/^/$1 | /"; }
stop() {
    trap - INT TERM EXIT
    [ ${#nodes[@]} -eq 0 ] || kill "${nodes[@]}" 2>/dev/null || true
    wait "${nodes[@]}" 2>/dev/null || true
    if [ -n "$redis" ]; then
        kill "$redis" 2>/dev/null || true
        wait "$redis" 2>/dev/null || true
    fi
    say "stopped"
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

if redis_answers; then
    say "step 3/4: Redis already answers on 127.0.0.1:6379; using it"
else
    if ! command -v redis-server >/dev/null 2>&1; then
        say "redis-server is required (Debian/Ubuntu: apt-get install redis-server, or run scripts/setup-tests.sh)"
        exit 1
    fi
    say "step 3/4: starting Redis on 127.0.0.1:6379 (no persistence)"
    # In its own session, so that Ctrl-C reaches the nodes alone and they can still
    # remove their connections from Redis while they shut down; stop() ends it after.
    setsid redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --loglevel warning > >(label redis) 2>&1 &
    redis=$!
    for _ in $(seq 100); do
        redis_answers && break
        kill -0 "$redis" 2>/dev/null || { say "redis-server exited (is port 6379 taken?)"; exit 1; }
        sleep 0.1
    done
    redis_answers || { say "Redis did not answer on 127.0.0.1:6379 within 10 s"; exit 1; }
fi

say "step 4/4: starting nodes a, b and c (examples/cluster/node-{a,b,c}.toml)"
for node in a b c; do
    target/release/wsgate serve --config "examples/cluster/node-$node.toml" > >(label "$node") 2>&1 &
    nodes+=($!)
done
n=0
for node in a b c; do
    n=$((n + 1))
    for _ in $(seq 300); do
        accepts "808$n" && accepts "909$n" && break
        kill -0 "${nodes[n - 1]}" 2>/dev/null || { say "node $node exited (see its log above)"; exit 1; }
        sleep 0.1
    done
    accepts "808$n" || { say "node $node did not listen within 30 s"; exit 1; }
    say "node $node: clients ws://127.0.0.1:808$n/{tenant}{route}, management API http://127.0.0.1:909$n"
done
say "Ctrl-C stops them all"
# Until Ctrl-C, or until one of them ends (then everything stops).
set +e
wait -n "${nodes[@]}" ${redis:+"$redis"}
status=$?
say "a process ended (status $status); stopping the others"
exit "$status"
