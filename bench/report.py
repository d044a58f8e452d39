"""Turns scripts/bench.sh's results.jsonl into RESULTS.md, results.svg and README's table.

    python3 bench/report.py RESULTS_JSONL OUT_DIR SECONDS [--smoke] [--only S12]

With --smoke it checks that every scenario produced figures, that S9 and S12 got nothing
but echoes back and that no S10 management POST failed (exit 1 if not), and leaves
README.md alone. With --only S12 (BENCH_ONLY=S12 scripts/bench.sh) the results hold S12
alone: it writes OUT_DIR/RESULTS-S12.md, and no RESULTS.md, results.svg or README table.
"""

import datetime
import json
import os
import platform
import subprocess
import sys

EXPECTED = [
    "S1 raw", "S1 node", "S1 wsgate", "S2 raw", "S2 node", "S2 wsgate",
    "S3 raw", "S3 node", "S3 wsgate", "S4 raw", "S4 node", "S4 wsgate", "S4 wsgate large",
    "S5 room", "S5 room-each", "S5 raw", "S6 http", "S6 wsgate", "S7 quiet", "S7 noisy", "S8", "S8 mix",
    "S11 quiet", "S11 flood", "S11 capped",
    "S9 relay", "S9 wsgate",
    "S10 same-node", "S10 cross-node", "S10 broadcast one node", "S10 broadcast two nodes",
]
S12_LANGS = {"rust": "Rust", "js": "JavaScript", "py": "Python"}
# S12's cold compiles of the JavaScript and Python components are skipped in the smoke
# once its cache holds them (scripts/bench.sh).
S12_OPTIONAL = {"S12 cold js", "S12 cold py"}
S12 = [f"S12 {what} {lang}" for what in ["cold", "cached", "memory", "echo", "fresh", "load-8", "load-100"] for lang in S12_LANGS]
EXPECTED += S12
S10_POSTS = ["S10 same-node", "S10 cross-node"]
S10_BROADCASTS = ["S10 broadcast one node", "S10 broadcast two nodes"]
SERVERS = ["raw", "node", "wsgate"]


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def verdict(ok):
    return "met" if ok else "**missed**"


def header(seconds):
    return ("# Benchmark results\n\n"
            f"Produced by `scripts/bench.sh` on {datetime.date.today()}, {seconds} s per timed measurement, "
            f"on {os.cpu_count()} cores ({platform.machine()}), {version(['rustc', '--version'])}, "
            f"node {version(['node', '--version'])}. All servers and the load client share this machine: "
            "compare ratios, not absolute numbers.")


def tables(by, seconds):
    out = []
    w = out.append
    w(header(seconds) + " `raw` is a tokio-tungstenite echo server without Wasm (the ceiling), `node` is "
      "Node.js `ws`, `wsgate` runs the echo plugin (bench/wsgate.toml).\n")

    s1w, s1r, s1n = by["S1 wsgate"], by["S1 raw"], by["S1 node"]
    s2w, s2r = by["S2 wsgate"], by["S2 raw"]
    s3w, s3r, s3n = by["S3 wsgate"], by["S3 raw"], by["S3 node"]
    s4w = by["S4 wsgate"]
    s4l = by["S4 wsgate large"]
    s5, s5raw = by["S5 room"], by["S5 raw"]
    s6w, s6h = by["S6 wsgate"], by["S6 http"]
    s7q, s7n = by["S7 quiet"], by["S7 noisy"]
    s8 = by["S8"]
    s11q, s11f, s11c = by["S11 quiet"], by["S11 flood"], by["S11 capped"]
    s9w, s9r = by["S9 wsgate"], by["S9 relay"]
    p99 = lambda r: r["latency_us"]["p99"]
    # S9's load counts a reply other than the echo (an error frame) as an error: a run
    # with any is not a fair comparison, whatever its rate.
    s9_wrong = s9w["errors_total"] + s9r["errors_total"]
    s9_note = f" ({s9w['errors_total']} wrong replies from wsgate, {s9r['errors_total']} from relay)" if s9_wrong else ""
    w("## Targets\n")
    w("| scenario | target | measured | |")
    w("|---|---|---|---|")
    rows = [
        ("S1 echo 64 B", "≥ 0.95× raw", f"{s1w['per_sec'] / s1r['per_sec']:.2f}× raw", s1w["per_sec"] >= 0.95 * s1r["per_sec"]),
        ("S1 echo 64 B", "≥ 1.2× Node", f"{s1w['per_sec'] / s1n['per_sec']:.2f}× Node", s1w["per_sec"] >= 1.2 * s1n["per_sec"]),
        ("S1 latency", "p99 ≤ 1.5× raw", f"{p99(s1w) / p99(s1r):.2f}× raw", p99(s1w) <= 1.5 * p99(s1r)),
        ("S2 echo 16 KiB", "≥ 0.9× raw MB/s", f"{s2w['mb_per_sec'] / s2r['mb_per_sec']:.2f}× raw", s2w["mb_per_sec"] >= 0.9 * s2r["mb_per_sec"]),
        ("S3 churn", "≥ 0.8× raw", f"{s3w['per_sec'] / s3r['per_sec']:.2f}× raw", s3w["per_sec"] >= 0.8 * s3r["per_sec"]),
        ("S3 churn", "≥ 1.0× Node", f"{s3w['per_sec'] / s3n['per_sec']:.2f}× Node", s3w["per_sec"] >= s3n["per_sec"]),
        ("S4 idle", "≤ 5 KiB per connection", f"{s4w['per_connection_kib']:.2f} KiB at {s4w['connections']}", s4w["per_connection_kib"] <= 5),
        ("S4 after a 128 KiB message", "≤ 2× fresh", f"{s4l['per_connection_kib'] / s4w['per_connection_kib']:.2f}× fresh ({s4l['per_connection_kib']:.2f} KiB)", s4l["per_connection_kib"] <= 2 * s4w["per_connection_kib"]),
        ("S5 broadcast", "last delivery ≤ 20 ms", f"p50 {s5['last_delivery_us']['p50'] / 1e3:.1f} ms, p99 {s5['last_delivery_us']['p99'] / 1e3:.1f} ms to {s5['receivers']} ({s5['last_delivery_us']['p50'] / s5raw['last_delivery_us']['p50']:.2f}× raw)", s5["last_delivery_us"]["p99"] <= 20_000),
        ("S6 management POST", "≥ 20k/s", f"{s6w['per_sec']:.0f}/s", s6w["per_sec"] >= 20_000),
        ("S6 management POST", "p99 ≤ 5 ms", f"{p99(s6w) / 1e3:.2f} ms", p99(s6w) <= 5_000),
        ("S7 noisy neighbour", "p99 ≤ 2× quiet", f"{p99(s7n) / p99(s7q):.2f}× quiet", p99(s7n) <= 2 * p99(s7q)),
        ("S11 flood, no quota", "quiet tenant ≥ 0.5× its quiet rate", f"{s11f['per_sec'] / s11q['per_sec']:.2f}× quiet", s11f["per_sec"] >= 0.5 * s11q["per_sec"]),
        ("S11 flood, quota", "quiet tenant ≥ 0.5× its quiet rate", f"{s11c['per_sec'] / s11q['per_sec']:.2f}× quiet", s11c["per_sec"] >= 0.5 * s11q["per_sec"]),
        ("S11 flood, quota", "quiet tenant p99 ≤ 3× quiet", f"{p99(s11c) / p99(s11q):.2f}× quiet", p99(s11c) <= 3 * p99(s11q)),
        # Judged without the function cache: the copies share every function, which
        # different plugins do not.
        ("S8 start-up, cold", "≤ 2 s", f"{s8['cold_unshared_s']:.2f} s with {s8['plugins']} plugins, every function compiled ({s8['cold_s']:.2f} s with the function cache)", s8["cold_unshared_s"] <= 2),
        ("S8 start-up, warm", "≤ 0.3 s", f"{s8['warm_s']:.3f} s", s8["warm_s"] <= 0.3),
        ("S9 integration throughput", "≥ 0.8× native relay", f"{s9w['per_sec'] / s9r['per_sec']:.2f}× relay{s9_note}", not s9_wrong and s9w["per_sec"] >= 0.8 * s9r["per_sec"]),
        ("S9 integration p99", "≤ 1.5× native relay", f"{p99(s9w) / p99(s9r):.2f}× relay{s9_note}", not s9_wrong and p99(s9w) <= 1.5 * p99(s9r)),
    ]
    for name, target, measured, ok in rows:
        w(f"| {name} | {target} | {measured} | {verdict(ok)} |")

    w("\n## S1–S3: echo and churn\n")
    w("S1: echo 64 B, 100 connections, closed loop. S2: echo 16 KiB, 50 connections. "
      "S3: connect, one message, close, 50 workers. Latency is per message (S1, S2) or per cycle (S3). "
      + (f"Each row is the median by rate of {by['S1 raw']['runs']} runs, the servers taking turns.\n"
         if by["S1 raw"]["runs"] > 1 else "\n"))
    w("| scenario | server | rate | MB/s | p50 µs | p99 µs | p99.9 µs | server RSS KiB | server CPU | vs raw | vs node |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in ["S1", "S2", "S3"]:
        raw, node = by[f"{scenario} raw"], by[f"{scenario} node"]
        for server in SERVERS:
            r = by[f"{scenario} {server}"]
            s = r.get("server", {})
            lat = r["latency_us"]
            w(f"| {scenario} | {server} | {r['per_sec']:.0f} {r['unit']}/s | {r['mb_per_sec']:.1f} | "
              f"{lat['p50']} | {lat['p99']} | {lat['p999']} | {s.get('rss_kib', '-')} | {s.get('cpu_percent', 0):.0f}% | "
              f"{ratio(r['per_sec'], raw['per_sec'])} | {ratio(r['per_sec'], node['per_sec'])} |")

    w("\n## S4: idle connections\n")
    w("Server RSS growth from one open connection to all of them, divided by their number. "
      "Kernel TCP buffer memory and slab growth (socket, file and TCP structures) are for both "
      "ends, since client and server run here: halve them for the server's share.\n")
    left = by["S4 wsgate"].get("left_after_s")
    left_head = f"RSS {left:g} s after they closed KiB" if left else "RSS after they closed KiB"
    w(f"| server | connections | RSS before KiB | RSS after KiB | KiB per connection | {left_head} | kernel TCP KiB | kernel slab KiB | vs raw | vs node |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for server in SERVERS:
        r = by[f"S4 {server}"]
        w(f"| {server} | {r['connections']} | {r['rss_before_kib']} | {r['rss_after_kib']} | "
          f"{r['per_connection_kib']:.2f} | {r.get('rss_left_kib') or '-'} | {r['kernel_tcp_kib']} | {r.get('kernel_slab_kib', '-')} | "
          f"{ratio(r['per_connection_kib'], by['S4 raw']['per_connection_kib'])} | "
          f"{ratio(r['per_connection_kib'], by['S4 node']['per_connection_kib'])} |")
    r = s4l
    w(f"\nAfter each connection echoed one {r['message_bytes']}-byte message (a fresh gateway): "
      f"{r['per_connection_kib']:.2f} KiB per connection at {r['connections']}, "
      f"{r['per_connection_kib'] / s4w['per_connection_kib']:.2f}× the fresh figure"
      + (f"; {r['rss_left_kib']} KiB of RSS {r['left_after_s']:g} s after they closed (from {r['rss_after_kib']})"
         if r.get("rss_left_kib") else "")
      + ". tungstenite keeps "
      "its buffers at the largest message's size; wsgate rebuilds its state once the message is done "
      "(runtime/src/socket_io.rs).")

    w("\n## S5: broadcast from a plugin\n")
    w("One connection's message is fanned out by the plugin to every other connection in the room; "
      "the time runs from the send to the last delivery, read by the client. `room` uses the "
      "`broadcast` host call; `room-each` lists the room and calls `send` per recipient; `raw` is the "
      "raw tokio-tungstenite server relaying each message to every other connection (the ceiling).\n")
    w("| variant | receivers | rounds | last p50 ms | last p99 ms | last max ms | first p50 ms | last p50 vs raw |")
    w("|---|---|---|---|---|---|---|---|")
    for label in ["S5 room", "S5 room-each", "S5 raw"]:
        r = by[label]
        last = r["last_delivery_us"]
        w(f"| {label[3:]} | {r['receivers']} | {r['rounds']} | {last['p50'] / 1e3:.2f} | {last['p99'] / 1e3:.2f} | "
          f"{last['max'] / 1e3:.2f} | {r['first_delivery_us']['p50'] / 1e3:.2f} | "
          f"{ratio(last['p50'], s5raw['last_delivery_us']['p50'])} |")

    w("\n## S6: management API\n")
    w("`POST /{tenant}/@connections/{id}` with a bearer key over 16 keep-alive connections, each "
      "posting 64 B to a WebSocket of its own. `http` (the baseline) is an axum server that "
      "answers 200 to every POST without doing anything.\n")
    w("| server | requests/s | p50 µs | p99 µs | p99.9 µs | errors | vs http |")
    w("|---|---|---|---|---|---|---|")
    for label in ["S6 http", "S6 wsgate"]:
        r = by[label]
        lat = r["latency_us"]
        w(f"| {label[3:]} | {r['per_sec']:.0f} | {lat['p50']} | {lat['p99']} | {lat['p999']} | {r['errors']} | "
          f"{ratio(r['per_sec'], s6h['per_sec'])} |")

    w("\n## S7: noisy neighbour\n")
    w("Tenant `bench`'s echo, closed loop over 10 connections, first alone, then while tenant "
      "`noisy`'s plugin spins for its whole 100 ms time limit on every message from 4 connections "
      "(its events are capped at one core by `max_concurrent_events`). Each row is the median by "
      f"p99 of {by['S7 quiet']['runs']} runs, quiet and noisy taking turns.\n")
    w("| run | rate | p50 µs | p99 µs | p99.9 µs | server CPU | p99 vs quiet |")
    w("|---|---|---|---|---|---|---|")
    for label in ["S7 quiet", "S7 noisy"]:
        r = by[label]
        lat = r["latency_us"]
        w(f"| {label[3:]} | {r['per_sec']:.0f} msgs/s | {lat['p50']} | {lat['p99']} | {lat['p999']} | "
          f"{r.get('server', {}).get('cpu_percent', 0):.0f}% | {ratio(lat['p99'], p99(s7q))} |")

    w("\n## S11: fairness between tenants\n")
    w("Tenant `bench`'s echo, closed loop over 4 connections, first alone, then while tenant `flood`'s "
      "echo is driven by 200 connections, closed loop, with no quota, then while tenant `capped` is driven the same way with "
      "`tenant_message_rate = 5000`. The flooding client shares the machine's two cores with the "
      "gateway and the measured client. "
      + (f"Each row is the median by rate of {s11q['runs']} runs, taking turns.\n" if s11q["runs"] > 1 else "\n"))
    w("| run | rate | p50 µs | p99 µs | p99.9 µs | server CPU | rate vs quiet | p99 vs quiet |")
    w("|---|---|---|---|---|---|---|---|")
    for label in ["S11 quiet", "S11 flood", "S11 capped"]:
        r = by[label]
        lat = r["latency_us"]
        w(f"| {label[4:]} | {r['per_sec']:.0f} msgs/s | {lat['p50']} | {lat['p99']} | {lat['p999']} | "
          f"{r.get('server', {}).get('cpu_percent', 0):.0f}% | {ratio(r['per_sec'], s11q['per_sec'])} | "
          f"{ratio(lat['p99'], p99(s11q))} |")

    w("\n## S8: start-up\n")
    w(f"The gateway started with {s8['plugins']} distinct plugins (copies of echo with a custom section "
      "each, so each compiles on its own), timed to its `listening` line: with an empty compile cache "
      "and the function cache off (every function of every plugin compiled: what plugins sharing no "
      "code would cost), with an empty compile cache and the function cache on (the default; copies "
      "share every function, so this is its best case), then the fastest of three starts with the "
      "compile cache filled. `mix` starts six different plugins (echo, connection-id, chat, auth and "
      "two testing plugins) once each: what the function cache saves when the code really differs.\n")
    w("| plugins | cold s, function cache off | cold s | warm s | cold / warm |")
    w("|---|---|---|---|---|")
    for label in ["S8", "S8 mix"]:
        r = by[label]
        name = f"{r['plugins']} copies of echo" if label == "S8" else f"{r['plugins']} different"
        w(f"| {name} | {r['cold_unshared_s']:.3f} | {r['cold_s']:.3f} | {r['warm_s']:.3f} | "
          f"{r['cold_over_warm']:.1f}x |")

    w("\n## S9: HTTP integration\n")
    w("Echo through an HTTP backend: 64 B, 50 connections, closed loop. `wsgate` runs the stock "
      "integration plugin (`shape = \"aws\"`, route `/bench/aws`), which POSTs every message to "
      "`wsgate-bench lambda-backend` as an AWS Lambda proxy event and sends the answer's `body` back. "
      "`relay` (the baseline) is a tokio-tungstenite server doing the same natively: the same MESSAGE "
      "event built with serde_json, POSTed to the same backend through one pooled keep-alive hyper "
      "client shared by all connections, each connection's messages in order. Both sides' HTTP "
      "connections are pooled the same way (TCP_NODELAY, 90 s idle). Server CPU and RSS are the "
      "gateway's or the relay's; the backend's are not counted in either. A reply other than the "
      "echo counts as an error. "
      + (f"Each row is the median by rate of {s9r['runs']} runs, the two taking turns.\n"
         if s9r["runs"] > 1 else "\n"))
    w("| server | rate | p50 µs | p90 µs | p99 µs | p99.9 µs | wrong replies, all runs | server RSS KiB | server CPU | rate vs relay | p99 vs relay |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in ["S9 relay", "S9 wsgate"]:
        r = by[label]
        s = r.get("server", {})
        lat = r["latency_us"]
        w(f"| {label[3:]} | {r['per_sec']:.0f} msgs/s | {lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['p999']} | "
          f"{r['errors_total']} | {s.get('rss_kib', '-')} | {s.get('cpu_percent', 0):.0f}% | "
          f"{ratio(r['per_sec'], s9r['per_sec'])} | {ratio(lat['p99'], p99(s9r))} |")

    s10s, s10b1 = by["S10 same-node"], by["S10 broadcast one node"]
    w("\n## S10: cluster mode\n")
    w("Two gateway nodes, `a` and `b`, on bench/wsgate.toml with a `[cluster]` table, sharing one "
      "Redis (its own `redis-server` on loopback, no persistence), all on this machine. The issue "
      "sets no target for these: they are measurements, each against its single-node baseline in the "
      "same run. "
      + (f"Each row is the median of {s10s['runs']} runs (by rate for POSTs, by last-delivery p50 for "
         "broadcasts), the two sides taking turns.\n" if s10s["runs"] > 1 else "\n"))
    w("Management `POST /bench/@connections/{id}` as S6 (16 keep-alive connections, 64 B, bearer key), "
      "the WebSockets all on node a. `same-node` posts to a's admin listener (the baseline); "
      "`cross-node` posts to b's, so every post goes through Redis to a's inbox and b answers 200 "
      "once a has queued the message. Server CPU is that of the node posted to.\n")
    w("| run | requests/s | p50 µs | p99 µs | p99.9 µs | errors, all runs | server CPU | rate vs same-node | p99 vs same-node |")
    w("|---|---|---|---|---|---|---|---|---|")
    for label in S10_POSTS:
        r = by[label]
        lat = r["latency_us"]
        w(f"| {label[4:]} | {r['per_sec']:.0f} | {lat['p50']} | {lat['p99']} | {lat['p999']} | {r['errors_total']} | "
          f"{r.get('server', {}).get('cpu_percent', 0):.0f}% | {ratio(r['per_sec'], s10s['per_sec'])} | "
          f"{ratio(lat['p99'], p99(s10s))} |")
    w("\nThe fan-out plugin's `broadcast` (S5's `room`) with the sender on node a: `one node` has every "
      "receiver on a too (the baseline: a cluster node broadcasting locally); `two nodes` has half of "
      "them on b, which a reaches through b's inbox in Redis. A round ends when every receiver has "
      "the message.\n")
    w("| variant | receivers | on node b | rounds | last p50 ms | last p99 ms | last max ms | first p50 ms | last p50 vs one node | last p99 vs one node |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for label in S10_BROADCASTS:
        r = by[label]
        last, base = r["last_delivery_us"], s10b1["last_delivery_us"]
        w(f"| {label[14:]} | {r['receivers']} | {r.get('split_receivers', 0)} | {r['rounds']} | "
          f"{last['p50'] / 1e3:.2f} | {last['p99'] / 1e3:.2f} | {last['max'] / 1e3:.2f} | "
          f"{r['first_delivery_us']['p50'] / 1e3:.2f} | {ratio(last['p50'], base['p50'])} | "
          f"{ratio(last['p99'], base['p99'])} |")
    out += s12_table(by)
    return "\n".join(out) + "\n"


def tool_version(lang):
    """The componentize tool a language's component was built with, when installed."""
    try:
        if lang == "js":
            path = "plugins/js/node_modules/@bytecodealliance/componentize-js/package.json"
            return f"componentize-js {json.load(open(path))['version']}"
        if lang == "py":
            return version(["target/polyglot-py/bin/componentize-py", "--version"])
    except (OSError, ValueError, KeyError):
        pass
    return "componentize-js" if lang == "js" else "componentize-py"


def size(n):
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.0f} KiB"


def s12_table(by):
    """S12's section: the echo plugin in each language, against the Rust one."""
    out = []
    w = out.append
    rust8, rust100 = by["S12 load-8 rust"], by["S12 load-100 rust"]
    compiles, runs = by["S12 cached rust"]["runs"], rust100["runs"]
    sources = {"rust": "plugins/echo (cargo, wasm32-wasip2)",
               "js": f"plugins/js/echo ({tool_version('js')})",
               "py": f"plugins/py/echo ({tool_version('py')})"}
    w("\n## S12: plugins in JavaScript and Python\n")
    w("The echo plugin in each language (bench/polyglot.toml: " + "; ".join(
        f"{name}: {sources[lang]}" for lang, name in S12_LANGS.items()) + "), in one gateway, a tenant "
      "each, all with the limits examples/polyglot.toml gives JavaScript and Python (64 MiB per "
      "instance, kept warm up to 32 MiB, 64 kept) and a 1 s time limit. Every load checked that each "
      "reply was the echo. "
      + (f"Compile figures are the median of {compiles} runs, the others the median by rate of {runs} "
         "runs, the languages taking turns. " if runs > 1 else "")
      + "Per language:\n")
    w("- **component**: the .wasm file. **cold compile**: the compile time `wsgate check` reports for "
      "the plugin alone with an empty compile cache (Cranelift on both cores, the function cache "
      "on, the entry stored); **from cache**: the same once the cache holds it (read and "
      "deserialised): what a restart pays.")
    w("- **new instance**: the mean time of a message event (the gateway's "
      "`wsgate_plugin_event_duration_seconds`; one connection, closed loop) on a plugin with "
      "`pool_size = 0`, which makes an instance for every event and drops it afterwards, minus the "
      "same on a warm instance: instantiation, the guest's start-up code and the drop.")
    w("- **memory per warm instance**: on a fresh gateway, its RSS growth while "
      f"{by['S12 memory rust']['instances']} copies of the plugin (one component, compiled once) "
      "each get one instance, which their pools keep, divided by their number. One more copy goes "
      "first, outside the count, so what only the first instance of a component costs (its code "
      "paged in, the initial memory image, which instances share until they write to it) is not "
      "charged to each.")
    w("- **echo p50** and **event**: one connection, closed loop, on a warm instance: the client's "
      "round trip, and the plugin event's mean time in the gateway.")
    w("- **msgs/s**: 64 B, closed loop, over 8 connections, then "
      "over 100 (as S1); **CPU per message**: the gateway's CPU time over the window divided by the "
      "messages echoed (the client shares the two cores).\n")
    w("| language | component | cold compile s | from cache ms | new instance ms | memory per warm instance MiB |")
    w("|---|---|---|---|---|---|")
    for lang, name in S12_LANGS.items():
        cold, cached = by.get(f"S12 cold {lang}"), by[f"S12 cached {lang}"]
        mem, echo, fresh = (by[f"S12 {what} {lang}"] for what in ["memory", "echo", "fresh"])
        cold_s = f"{cold['ms'] / 1e3:.2f}" if cold else "skipped"
        per_instance = (mem["rss_after_kib"] - mem["rss_before_kib"]) / mem["instances"] / 1024
        w(f"| {name} | {size(cached['bytes'])} | {cold_s} | {cached['ms']:.1f} | "
          f"{(fresh['event_us'] - echo['event_us']) / 1e3:.2f} | {per_instance:.2f} |")
    if any(f"S12 cold {lang}" not in by for lang in S12_LANGS):
        w("\nSkipped: cold compiles of components the smoke's compile cache already held.")

    def cpu_us(r):
        cpu = r.get("server", {}).get("cpu_percent")
        return f"{cpu / 100 / r['per_sec'] * 1e6:.1f}" if cpu is not None else "-"

    w("\n| language | echo p50 µs, 1 connection | event µs, 1 connection | msgs/s, 8 connections | vs Rust | "
      "CPU µs per message | msgs/s, 100 connections | vs Rust | CPU µs per message | event µs, 100 connections |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for lang, name in S12_LANGS.items():
        echo, l8, l100 = (by[f"S12 {what} {lang}"] for what in ["echo", "load-8", "load-100"])
        w(f"| {name} | {echo['latency_us']['p50']} | {echo['event_us']:.1f} | {l8['per_sec']:.0f} | "
          f"{ratio(l8['per_sec'], rust8['per_sec'])} | {cpu_us(l8)} | {l100['per_sec']:.0f} | "
          f"{ratio(l100['per_sec'], rust100['per_sec'])} | {cpu_us(l100)} | {l100['event_us']:.0f} |")
    return out

def svg(by):
    """Two panels of grouped bars: S1–S3 rate and p99, each relative to raw."""
    width, height, top, panel_h = 720, 300, 40, 200
    colors = {"raw": "#888888", "node": "#3c873a", "wsgate": "#2f6fd6"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    panels = [("throughput vs raw (higher is better)", lambda r: r["per_sec"]),
              ("p99 latency vs raw (lower is better)", lambda r: r["latency_us"]["p99"])]
    for i, (title, value) in enumerate(panels):
        x0 = 40 + i * (width // 2)
        parts.append(f'<text x="{x0}" y="20" font-weight="bold">{title}</text>')
        ratios = {(s, v): value(by[f"{s} {v}"]) / value(by[f"{s} raw"]) for s in ["S1", "S2", "S3"] for v in SERVERS}
        top_ratio = max(2.0, max(ratios.values()) * 1.1)
        base = top + panel_h
        parts.append(f'<line x1="{x0}" y1="{base}" x2="{x0 + 300}" y2="{base}" stroke="black"/>')
        one = base - panel_h / top_ratio
        parts.append(f'<line x1="{x0}" y1="{one:.1f}" x2="{x0 + 300}" y2="{one:.1f}" stroke="#bbb" stroke-dasharray="4"/>')
        parts.append(f'<text x="{x0 - 30}" y="{one + 4:.1f}">1.0×</text>')
        for g, scenario in enumerate(["S1", "S2", "S3"]):
            gx = x0 + 10 + g * 100
            for b, server in enumerate(SERVERS):
                r = ratios[(scenario, server)]
                h = panel_h * r / top_ratio
                bx = gx + b * 26
                parts.append(f'<rect x="{bx}" y="{base - h:.1f}" width="22" height="{h:.1f}" fill="{colors[server]}"/>')
                parts.append(f'<text x="{bx + 11}" y="{base - h - 3:.1f}" text-anchor="middle" font-size="10">{r:.2f}</text>')
            parts.append(f'<text x="{gx + 36}" y="{base + 16}" text-anchor="middle">{scenario}</text>')
    for k, server in enumerate(SERVERS):
        lx = 40 + k * 110
        parts.append(f'<rect x="{lx}" y="{height - 28}" width="12" height="12" fill="{colors[server]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{height - 18}">{server}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 18}" text-anchor="end" fill="#666">'
                 'S1 echo 64 B · S2 echo 16 KiB · S3 churn — scripts/bench.sh</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    results, out_dir, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
    smoke = "--smoke" in sys.argv[4:]
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv[4:] else None
    if only not in (None, "S12"):
        sys.exit(f"bench: --only {only}: the scenario that runs alone is S12")
    runs = {}
    for line in open(results):
        row = json.loads(line)
        runs.setdefault(row["label"], []).append(row)
    # A label measured several times (S1-S3, S7, S9, S10, S11, S12) is represented by its
    # median run: by rate, by p99 for S7, whose figure is latency, by the last delivery's
    # p50 for S10's broadcasts, and by time for S12's compiles.
    by = {}
    for label, rows in runs.items():
        if label.startswith("S7"):
            rows.sort(key=lambda r: r["latency_us"]["p99"])
        elif label.startswith(("S12 cold", "S12 cached")):
            rows.sort(key=lambda r: r["ms"])
        elif label in S10_BROADCASTS:
            rows.sort(key=lambda r: r["last_delivery_us"]["p50"])
        else:
            rows.sort(key=lambda r: r.get("per_sec", 0))
        by[label] = rows[len(rows) // 2]
        by[label]["runs"] = len(rows)
        by[label]["errors_total"] = sum(r.get("errors", 0) for r in rows)
    expected = S12 if only else EXPECTED
    missing = [label for label in expected if label not in by and not (smoke and label in S12_OPTIONAL)]
    if missing:
        sys.exit(f"bench: no figures for {', '.join(missing)}; the log above says why")
    # S9's client counts a reply other than the echo (the plugin's error frame, say) as
    # an error: any means the integration is broken, which the smoke must not pass.
    echoes = [label for label in by if label.startswith(("S9", "S12 echo", "S12 fresh", "S12 load"))]
    wrong = [f"{label} ({by[label]['errors_total']})" for label in echoes if by[label]["errors_total"]]
    if smoke and wrong:
        sys.exit(f"bench: replies other than the echo in {', '.join(wrong)}; the log above shows the first")
    # A failed S10 POST (a 503 from a node that did not hear back through Redis, say) means
    # the cluster is broken, whatever the rate.
    failed = [f"{label} ({by[label]['errors_total']})" for label in S10_POSTS
              if label in by and (by[label]["errors_total"] or not by[label]["count"])]
    if smoke and failed:
        sys.exit(f"bench: management POSTs failed or none succeeded in {', '.join(failed)}")
    if only:
        text = "\n".join([header(seconds)] + s12_table(by)) + "\n"
        with open(os.path.join(out_dir, f"RESULTS-{only}.md"), "w") as f:
            f.write(text)
        print(text)
        return
    text = tables(by, seconds)
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.svg"), "w") as f:
        f.write(svg(by))
    if not smoke:
        readme = open("README.md").read()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start in readme and end in readme:
            head, rest = readme.split(start, 1)
            _, tail = rest.split(end, 1)
            body = text.split("\n", 2)[2].replace("\n## ", "\n### ")  # without the title, one level down
            readme = f"{head}{start}\n{body}{end}{tail}"
            open("README.md", "w").write(readme)
    print(text)


if __name__ == "__main__":
    main()
