//! The admin listener against clients that hold it: credentials are checked from the
//! headers before any body is read, a request head (or the wait for the next one on a
//! keep-alive connection) has a time limit, and open connections have a cap.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Gateway, OPS_KEY, WAIT, config_with_admin, http, plugin};
use crate::plugins;

fn gateway_config(admin: &str) -> String {
    let mut text = plugin("demo", "echo", plugins::ECHO, "");
    text.push_str(
        "[tenants.demo.credentials]\nbearer_keys = [\"demo-key\"]\n[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n",
    );
    config_with_admin(admin, &text)
}

/// Reads until the server closes the connection (or the wait runs out); returns what
/// arrived, or `None` if the connection stayed open.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// An unknown key announcing a 16 MB body is refused from its headers, at once: the
/// gateway never waits for (or holds) a body for a caller it does not know. It used to
/// read up to 16 MiB before looking at the credentials.
#[tokio::test]
async fn credentials_are_checked_before_the_body_is_read() {
    let gateway = Gateway::start(&gateway_config("")).await;
    for authorization in [
        "Bearer wrong",
        "AWS4-HMAC-SHA256 Credential=AKIDNOBODY/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
    ] {
        let mut stream = TcpStream::connect(gateway.admin).await.unwrap();
        let head = format!(
            "POST /demo/@connections/abc HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\nContent-Length: 16000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 64];
        let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
            .await
            .expect("no answer before the body: the gateway waited for it")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{authorization}: {answer}"
        );
    }
}

/// A client that sends half a request head is cut off at `admin.header_timeout`, and so
/// is a keep-alive connection that sends no next request.
#[tokio::test]
async fn slow_heads_and_idle_keep_alive_connections_are_closed() {
    let gateway = Gateway::start(&gateway_config("header_timeout = \"300ms\"")).await;
    let mut slow = TcpStream::connect(gateway.admin).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut slow).await.is_some(),
        "a half-sent head held its connection"
    );

    let mut idle = TcpStream::connect(gateway.admin).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle)
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Past `admin.max_connections`, a new connection is closed as soon as it is accepted;
/// once one closes, a new one is served again.
#[tokio::test]
async fn admin_connections_are_capped() {
    let gateway = Gateway::start(&gateway_config("max_connections = 3")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gateway.admin).await.unwrap();
        // A full request, so the connection is known to be served (and stays open).
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 64];
        let n = tokio::time::timeout(WAIT, stream.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut extra = TcpStream::connect(gateway.admin).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(
        read_until_closed(&mut extra).await.as_deref(),
        Some(""),
        "a fourth connection was served"
    );

    drop(held.pop());
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let mut stream = TcpStream::connect(gateway.admin).await.unwrap();
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let answer = read_until_closed(&mut stream).await.unwrap_or_default();
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
            // The gateway frees the slot when it sees the closed connection's end.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "no slot came back after a connection closed"
    );
}

/// `/metrics` spans every tenant: it answers the operator key only, not a tenant's key
/// and not an anonymous caller (it used to answer anyone who reached the port).
#[tokio::test]
async fn metrics_answer_the_operator_only() {
    let gateway = Gateway::start(&gateway_config("")).await;
    let url = format!("http://{}/metrics", gateway.admin);
    for (who, headers) in [
        ("anyone", vec![]),
        (
            "a tenant",
            vec![("authorization".to_string(), "Bearer demo-key".to_string())],
        ),
    ] {
        let (status, kind, body) = http("GET", &url, &headers, vec![]).await;
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("ForbiddenException")),
            "{who}: {body}"
        );
    }
    let operator = [("authorization".to_string(), format!("Bearer {OPS_KEY}"))];
    let (status, _, body) = http("GET", &url, &operator, vec![]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("wsgate_connections"), "{body}");
}

/// One HTTP request; its status, headers and body (for tests that read `Retry-After`).
pub(crate) async fn answer(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("no answer within the wait")
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The `Retry-After` of a 429 `LimitExceededException`, in seconds.
pub(crate) fn retry_after(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> u64 {
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("LimitExceededException"),
        "{body}"
    );
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or_else(|| panic!("a 429 without a Retry-After in seconds: {headers:?}"))
}

fn bearer(key: &str) -> Vec<(String, String)> {
    vec![("authorization".to_owned(), format!("Bearer {key}"))]
}

/// The key-guessing attack from one address: past `admin.auth_failure_burst` failed
/// authentications, every request from there gets 429 with `Retry-After` without its
/// credentials being checked (the tenant's right key and the operator's too), and the
/// failures are counted by reason, never by key. The gateway used to answer every
/// guess at once, unlimited and uncounted (21,000 a second in the review).
#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    // One failure a minute after the burst: no cell comes back while the test runs.
    let gateway = Gateway::start(&gateway_config(
        "auth_failure_burst = 3\nauth_failures_per_minute = 1",
    ))
    .await;
    let url = format!("http://{}/demo/@connections", gateway.admin);
    for headers in [bearer("guess-1"), vec![], bearer("guess-2")] {
        let (status, _, body) = answer("GET", &url, &headers, b"").await;
        assert_eq!(status, 403, "{body}");
    }
    for (who, url, headers) in [
        ("a fourth guess", url.clone(), bearer("guess-3")),
        ("the tenant's key", url.clone(), bearer("demo-key")),
        (
            "the operator's key",
            format!("http://{}/metrics", gateway.admin),
            bearer(OPS_KEY),
        ),
    ] {
        let (status, headers, body) = answer("GET", &url, &headers, b"").await;
        let wait = retry_after(status, &headers, &body);
        assert!((1..=60).contains(&wait), "{who}: Retry-After {wait}");
    }
    // Requests that carry no credentials are not limited.
    let health = format!("http://{}/health", gateway.admin);
    assert_eq!(answer("GET", &health, &[], b"").await.0, 200);

    let metrics = gateway.internals().metrics.encode();
    for line in [
        "wsgate_admin_auth_failures_total{reason=\"unknown_key\"} 2",
        "wsgate_admin_auth_failures_total{reason=\"missing\"} 1",
        "wsgate_admin_auth_failures_total{reason=\"throttled\"} 3",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    assert!(!metrics.contains("guess"), "a key reached the metrics");
}

/// Refused credentials are logged with their source and reason, never the key, and
/// sampled: a flood of refusals writes one line a second that says how many it stands
/// for, instead of a line per request.
#[tokio::test]
async fn failed_authentications_are_logged_sampled() {
    let gateway = Gateway::start_binary(&gateway_config("")).await;
    let url = format!("http://{}/demo/@connections", gateway.admin);
    let refused = |line: &str| line.contains("admin API credentials refused");
    let refusals = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("refusals=")?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(answer("GET", &url, &bearer("guess-0"), b"").await.0, 403);
    let first = gateway
        .logs
        .wait_for("about the first refusal", |line| refused(line))
        .await;
    assert!(
        first.contains("source=127.0.0.1")
            && first.contains("reason=unknown_key")
            && refusals(&first) == 1,
        "{first}"
    );
    // A flood: past the default burst of 20 the refusals are throttled, and counted.
    for n in 1..=40 {
        let status = answer("GET", &url, &bearer(&format!("guess-{n}")), b"")
            .await
            .0;
        assert!(status == 403 || status == 429, "guess {n}: {status}");
    }
    // The next line is due a second after the first. Keep refusing one request every
    // 100 ms so that one arrives, and read the count it folds in.
    let url_for_pacer = url.clone();
    let pacer = tokio::spawn(async move {
        loop {
            answer("GET", &url_for_pacer, &bearer("guess-pacer"), b"").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let folded = gateway
        .logs
        .wait_for("folding the flood", |line| {
            refused(line) && refusals(line) > 40
        })
        .await;
    pacer.abort();
    assert!(
        !folded.contains("guess") && !first.contains("guess"),
        "{folded}"
    );
}
