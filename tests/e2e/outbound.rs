//! Plugins calling backends over HTTP: deny by default, the grant checked on the
//! request's URI (never a header, never userinfo) and again on every redirect, waiting
//! that is not computing, and every wait bounded. The `test-fetch` plugin does what each
//! JSON message says; real backends are started by the tests.
//!
//! Each test of the SDK's client runs twice (`both_transports!`): through the one-call
//! `wsgate:plugin/http-client` import the SDK uses, and through `wasi:http`
//! (`Request::via_wasi_http`), which plugins in other languages use.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::{Backend, Reply};
use crate::harness::{Gateway, ask, config, plugin, recv_json, send_text};
use crate::plugins;

/// Tenant `t`: `/fetch` may call `granted` only, with the given extra plugin lines;
/// `/none` is the same plugin granted nothing; `/echo` is echo.
fn fetch_config(granted: &Backend, extra: &str, via: Via) -> String {
    let via = match via {
        Via::Client => "",
        Via::WasiHttp => "config = { via = \"wasi\" }\n",
    };
    let mut tenants = plugin(
        "t",
        "fetch",
        plugins::FETCH,
        &format!(
            "allowed_outbound_hosts = [{:?}]\n{via}{extra}",
            granted.origin()
        ),
    );
    tenants.push_str(&plugin("t", "none", plugins::FETCH, via));
    tenants.push_str(&plugin("t", "echo", plugins::ECHO, ""));
    tenants.push_str(
        r#"
[tenants.t.routes."/fetch"]
plugin = "fetch"
[tenants.t.routes."/none"]
plugin = "none"
[tenants.t.routes."/echo"]
plugin = "echo"
"#,
    );
    config(&tenants)
}

/// How the plugin's SDK sends its requests.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `wsgate:plugin/http-client`, the SDK's default.
    Client,
    /// `wasi:http/outgoing-handler`.
    WasiHttp,
}

/// Runs each named `async fn(Via)` as two tests, `via_client::NAME` and
/// `via_wasi_http::NAME`.
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod via_client {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Via::Client).await
            })*
        }
        mod via_wasi_http {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Via::WasiHttp).await
            })*
        }
    };
}

both_transports!(
    only_granted_origins_are_reached_and_refusals_are_logged_and_counted,
    the_guest_cannot_steer_the_destination_with_userinfo_host_or_redirects,
    a_slow_backend_is_waited_for_and_a_hanging_one_is_cut_at_the_outbound_timeout,
    waiting_events_leave_instances_and_order_to_the_route_s_other_connections,
    request_bodies_under_and_over_one_host_chunk_arrive_whole,
    answers_past_the_body_cap_fail_and_connections_are_reused,
);

async fn command(client: &mut crate::harness::Client, command: Value) -> Value {
    let answer = ask(client, &command.to_string()).await;
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

fn get(url: &str) -> Value {
    json!({"op": "http", "method": "GET", "url": url})
}

async fn only_granted_origins_are_reached_and_refusals_are_logged_and_counted(via: Via) {
    let granted = Backend::start(|_| Reply::ok("hello from the backend")).await;
    let other = Backend::start(|_| Reply::ok("must never be reached")).await;
    let gateway = Gateway::start_binary(&fetch_config(&granted, "", via)).await;
    let mut client = gateway.connect("/t/fetch").await;

    let answer = command(&mut client, get(&granted.url("/hi?x=1"))).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "hello from the backend");
    let seen = granted.wait_for(1).await;
    assert_eq!(seen[0].uri, "/hi?x=1");
    assert_eq!(
        seen[0].header("host"),
        Some(granted.addr.to_string().as_str())
    );

    // The same host on another port, another scheme, and a name for the same address
    // are other origins.
    for url in [
        other.url("/"),
        format!("https://{}/", granted.addr),
        format!("http://localhost:{}/", granted.addr.port()),
    ] {
        let answer = command(&mut client, get(&url)).await;
        assert_eq!(answer["error"], "Denied", "{url}: {answer}");
    }
    // A plugin granted nothing reaches nothing.
    let mut bare = gateway.connect("/t/none").await;
    let answer = command(&mut bare, get(&granted.url("/"))).await;
    assert_eq!(answer["error"], "Denied", "{answer}");

    assert!(
        other.seen().is_empty(),
        "a refused request reached the backend"
    );
    assert_eq!(granted.seen().len(), 1);
    let line = gateway
        .logs
        .wait_for("for the refused call", |l| {
            l.contains("outbound HTTP call refused") && l.contains(&other.addr.to_string())
        })
        .await;
    assert!(
        line.contains("tenant=t") && line.contains("plugin=fetch"),
        "{line}"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(
            r#"wsgate_outbound_requests_total{tenant="t",plugin="fetch",outcome="denied"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"wsgate_outbound_requests_total{tenant="t",plugin="fetch",outcome="2xx"} 1"#
        ),
        "{metrics}"
    );
}

async fn the_guest_cannot_steer_the_destination_with_userinfo_host_or_redirects(via: Via) {
    let granted_addr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let other = Backend::start(|_| Reply::ok("must never be reached")).await;
    let other_url = other.url("/stolen");
    let granted = Backend::start(move |seen| match seen.uri.as_str() {
        "/away" => Reply::status(302, "").header("location", &other_url),
        "/around" => Reply::status(307, "").header("location", "/landed"),
        _ => Reply::ok(format!("at {}", seen.uri)),
    })
    .await;
    *granted_addr.lock().unwrap() = granted.addr.to_string();
    let gateway = Gateway::start(&fetch_config(&granted, "", via)).await;
    let mut client = gateway.connect("/t/fetch").await;

    // Spin's CVE-2024-32980: an authority whose userinfo names the granted origin.
    let sneaky = format!("{}@{}", granted.addr, other.addr);
    let answer = command(
        &mut client,
        json!({"op": "raw", "authority": sneaky, "path": "/"}),
    )
    .await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("HttpRequestDenied"),
        "{answer}"
    );
    // A Host header naming another origin: wasi:http refuses the header itself.
    let answer = command(
        &mut client,
        json!({"op": "raw", "authority": granted.addr.to_string(), "path": "/", "host_header": other.addr.to_string()}),
    )
    .await;
    assert!(
        answer["header_error"]
            .as_str()
            .unwrap_or("")
            .contains("Forbidden"),
        "{answer}"
    );
    // A redirect within the grant is followed; one out of it is refused.
    let answer = command(&mut client, get(&granted.url("/around"))).await;
    assert_eq!(answer["body"], "at /landed", "{answer}");
    let answer = command(&mut client, get(&granted.url("/away"))).await;
    assert_eq!(answer["error"], "Denied", "{answer}");

    assert!(other.seen().is_empty(), "the other backend was reached");
    let paths: Vec<String> = granted.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, ["/around", "/landed", "/away"]);
}

async fn a_slow_backend_is_waited_for_and_a_hanging_one_is_cut_at_the_outbound_timeout(via: Via) {
    let backend = Backend::start(|seen| match seen.uri.as_str() {
        "/slow" => Reply {
            delay: Duration::from_secs(2),
            ..Reply::ok("slow answer")
        },
        "/hang" => Reply {
            hold: true,
            ..Reply::ok("never")
        },
        _ => Reply::ok(format!("fast {}", seen.uri)).header("connection", "close"),
    })
    .await;
    // The CPU limit is the default 100 ms; the waits may take 3 s.
    let gateway = Gateway::start(&fetch_config(
        &backend,
        "limits = { outbound_timeout = \"3s\" }",
        via,
    ))
    .await;

    // 2 s of waiting is not 2 s of computing.
    let mut client = gateway.connect("/t/fetch").await;
    let answer = command(&mut client, get(&backend.url("/slow"))).await;
    assert_eq!(answer["body"], "slow answer", "{answer}");

    // A backend that never answers is cut at outbound_timeout, and the guest sees a
    // timeout it can handle; its connection stays usable.
    let started = std::time::Instant::now();
    let answer = command(&mut client, get(&backend.url("/hang"))).await;
    assert_eq!(answer["error"], "Timeout", "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "cut early"
    );
    let answer = command(&mut client, get(&backend.url("/after"))).await;
    assert_eq!(answer["body"], "fast /after", "{answer}");

    // Computing still counts: 300 ms of spinning is past the 100 ms limit.
    send_text(&mut client, &json!({"op": "spin", "ms": 300}).to_string()).await;
    let failure = recv_json(&mut client).await;
    assert_eq!(failure["message"], "Internal server error", "{failure}");
    backend.release(1);

    // That spin marked the plugin CPU-heavy: its events now run on the low-priority
    // lane, and a call from there that needs a new connection (this backend closes each
    // one after its answer) still goes out.
    let answer = command(&mut client, get(&backend.url("/from-the-lane"))).await;
    assert_eq!(answer["body"], "fast /from-the-lane", "{answer}");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"wsgate_plugin_heavy_events_total{tenant="t",plugin="fetch"}"#),
        "the call did not run on the lane:\n{metrics}"
    );
}

async fn waiting_events_leave_instances_and_order_to_the_route_s_other_connections(via: Via) {
    let backend = Backend::start(|seen| match seen.uri.as_str() {
        "/held" => Reply {
            hold: true,
            ..Reply::ok("released")
        },
        _ => Reply::ok(format!("fast {}", seen.uri)),
    })
    .await;
    // Two compute places, eight calls in flight: six events waiting on a backend that
    // holds them must not take the places the seventh connection needs.
    let gateway = Gateway::start(&fetch_config(
        &backend,
        "limits = { max_instances = 2, max_outbound_requests = 8, pool_size = 2 }",
        via,
    ))
    .await;
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let mut client = gateway.connect("/t/fetch").await;
        send_text(&mut client, &get(&backend.url("/held")).to_string()).await;
        // The same connection's next message waits behind its first.
        send_text(&mut client, &get(&backend.url("/second")).to_string()).await;
        waiting.push(client);
    }
    backend.wait_for(6).await;

    let mut other = gateway.connect("/t/fetch").await;
    for i in 0..5 {
        let answer = command(&mut other, json!({"op": "spin", "ms": 1})).await;
        assert_eq!(answer["spun"], 1, "compute event {i} failed: {answer}");
        let answer = command(&mut other, get(&backend.url(&format!("/quick{i}")))).await;
        assert_eq!(answer["body"], format!("fast /quick{i}"), "{answer}");
    }
    let mut echo = gateway.connect("/t/echo").await;
    assert_eq!(ask(&mut echo, "still here").await, "still here");

    // Nothing of the six connections has moved on while their first call waits.
    let seen: Vec<String> = backend.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        !seen.contains(&"/second".to_string()),
        "order broken: {seen:?}"
    );
    backend.release(6);
    for client in &mut waiting {
        assert_eq!(recv_json(client).await["body"], "released");
        assert_eq!(recv_json(client).await["body"], "fast /second");
    }
}

/// The SDK puts a body that one write takes (1 MiB) in before handing the request over,
/// and a larger one after: both arrive whole, with their length. The host queues two
/// writes before the request is under way, so the 3 MiB body would wait for ever (and
/// the call time out) if it were all written first.
async fn request_bodies_under_and_over_one_host_chunk_arrive_whole(via: Via) {
    const PART: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let backend = Backend::start(|seen| Reply::ok(seen.body.len().to_string())).await;
    let gateway = Gateway::start(&fetch_config(&backend, "", via)).await;
    let mut client = gateway.connect("/t/fetch").await;
    // 64 B, exactly one write, one write and 64 B, three writes.
    for (i, repeat) in [1usize, 1 << 14, (1 << 14) + 1, 3 << 14]
        .into_iter()
        .enumerate()
    {
        let post = json!({
            "op": "http", "method": "POST", "url": backend.url("/len"),
            "body": PART, "repeat": repeat,
        });
        let expected = PART.len() * repeat;
        let answer = command(&mut client, post).await;
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["body"], expected.to_string(), "{answer}");
        let seen = backend.wait_for(i + 1).await;
        let body = &seen[i].body;
        assert_eq!(body.len(), expected, "{expected} bytes sent");
        assert!(body.chunks(PART.len()).all(|c| c == PART.as_bytes()));
        assert_eq!(
            seen[i].header("content-length"),
            Some(&*expected.to_string())
        );
    }
    // The testing plugin's own bound: a 64 MiB repeat is refused, nothing sent.
    let huge = json!({
        "op": "http", "method": "POST", "url": backend.url("/len"),
        "body": PART, "repeat": 1 << 20,
    });
    assert_eq!(command(&mut client, huge).await["error"], "bad command");
    assert_eq!(backend.seen().len(), 4, "a refused command sent a request");
}

async fn answers_past_the_body_cap_fail_and_connections_are_reused(via: Via) {
    let backend = Backend::start(|seen| match seen.uri.as_str() {
        "/big" => Reply::ok(vec![b'x'; 2 << 20]),
        "/big-chunked" => Reply {
            chunked: true,
            ..Reply::ok(vec![b'x'; 2 << 20])
        },
        _ => Reply::ok("small"),
    })
    .await;
    let gateway = Gateway::start(&fetch_config(
        &backend,
        "limits = { max_outbound_body_bytes = 1048576 }",
        via,
    ))
    .await;
    let mut client = gateway.connect("/t/fetch").await;
    for path in ["/big", "/big-chunked"] {
        let answer = command(&mut client, get(&backend.url(path))).await;
        assert_eq!(answer["error"], "TooLarge", "{path}: {answer}");
    }
    let before = backend.seen().len();
    let answer = command(
        &mut client,
        json!({"op": "many", "url": backend.url("/again"), "count": 20}),
    )
    .await;
    assert_eq!(answer["ok"], 20, "{answer}");
    let peers: HashSet<_> = backend.seen()[before..].iter().map(|s| s.peer).collect();
    assert!(
        peers.len() <= 2,
        "20 calls took {} TCP connections: the pool is not reused",
        peers.len()
    );
}

/// `http-client.send` called with what the SDK never builds: the host refuses each
/// request itself, says why, and the backends see nothing of them.
#[tokio::test]
async fn the_one_call_client_refuses_hostile_requests_itself() {
    let other = Backend::start(|_| Reply::ok("must never be reached")).await;
    let granted = Backend::start(|seen| Reply::ok(format!("at {}", seen.uri))).await;
    let gateway = Gateway::start(&fetch_config(&granted, "", Via::Client)).await;
    let mut client = gateway.connect("/t/fetch").await;
    let direct = |method: &str, url: String, headers: Value| json!({"op": "direct", "method": method, "url": url, "headers": headers});
    let (g, o) = (granted.addr, other.addr);
    let cases = [
        // Spin's CVE-2024-32980 again: userinfo naming the granted origin.
        (
            direct("GET", format!("http://{g}@{o}/"), json!([])),
            "invalid-url",
            "userinfo",
        ),
        (
            direct(
                "GET",
                format!("http://{o}/"),
                json!([["host", g.to_string()]]),
            ),
            "invalid-header",
            "\"host\"",
        ),
        (
            direct(
                "GET",
                format!("http://{g}/"),
                json!([["Host", o.to_string()]]),
            ),
            "invalid-header",
            "\"host\"",
        ),
        (
            direct(
                "GET",
                format!("http://{g}/"),
                json!([["transfer-encoding", "chunked"]]),
            ),
            "invalid-header",
            "transfer-encoding",
        ),
        (
            direct(
                "GET",
                format!("http://{g}/"),
                json!([["Connection", "close"]]),
            ),
            "invalid-header",
            "connection",
        ),
        (
            direct(
                "POST",
                format!("http://{g}/"),
                json!([["content-length", "0"]]),
            ),
            "invalid-header",
            "content-length",
        ),
        (
            direct("GET", format!("http://{g}/"), json!([["bad name", "x"]])),
            "invalid-header",
            "bad name",
        ),
        (
            direct(
                "GET",
                format!("http://{g}/"),
                json!([["x-a", "v\r\nx-injected: 1"]]),
            ),
            "invalid-header",
            "x-a",
        ),
        (
            direct(
                "GET",
                format!("http://{g}/"),
                json!([["x-big", "x", 140_000]]),
            ),
            "invalid-header",
            "bytes in all",
        ),
        (
            direct("GE T", format!("http://{g}/"), json!([])),
            "invalid-url",
            "method",
        ),
        (
            direct("GET", format!("ftp://{g}/"), json!([])),
            "invalid-url",
            "http://",
        ),
        (
            direct("GET", "/relative".into(), json!([])),
            "invalid-url",
            "absolute",
        ),
        (
            direct("CONNECT", format!("http://{g}/"), json!([])),
            "denied",
            "",
        ),
        (
            direct("connect", format!("http://{g}/"), json!([])),
            "denied",
            "",
        ),
        (
            direct("GET", format!("http://{o}/"), json!([])),
            "denied",
            "",
        ),
    ];
    for (request, error, detail) in cases {
        let answer = command(&mut client, request.clone()).await;
        assert_eq!(answer["error"], error, "{request}: {answer}");
        let said = answer["detail"].as_str().unwrap_or_default();
        assert!(said.contains(detail), "{request}: {answer}");
    }
    // The testing plugin's own bound on a repeated header value (8 MiB).
    let huge = direct(
        "GET",
        format!("http://{g}/"),
        json!([["x-big", "x", 8 << 20]]),
    );
    assert_eq!(command(&mut client, huge).await["error"], "bad command");
    assert!(
        other.seen().is_empty(),
        "a refused request reached a backend"
    );
    assert!(
        granted.seen().is_empty(),
        "a refused request reached a backend"
    );

    // What is well formed goes out, with the length of its body and `Host` from the URL.
    let answer = command(
        &mut client,
        json!({"op": "direct", "method": "POST", "url": granted.url("/ok#fragment"),
               "headers": [["x-a", "1"]], "body": "hello"}),
    )
    .await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "at /ok", "{answer}");
    let seen = granted.wait_for(1).await;
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("content-length"), Some("5"));
    assert_eq!(seen[0].header("x-a"), Some("1"));
    assert_eq!(seen[0].header("host"), Some(g.to_string().as_str()));
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(
            r#"wsgate_outbound_requests_total{tenant="t",plugin="fetch",outcome="denied"} 3"#
        ),
        "{metrics}"
    );
}
