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
