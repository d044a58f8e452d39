//! Client limits: each gives the documented close code or HTTP status, a metric, and
//! leaves the gateway serving.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Gateway, ask, config, expect_close, plugin, recv_json, recv_text, send_text};
use crate::plugins;

/// Tenants with small limits, each limit on its own tenant so tests do not interfere.
fn limits_config() -> String {
    let mut tenants = String::new();
    for tenant in ["rate", "cap", "idle", "age", "origin", "slow", "frames"] {
        tenants.push_str(&plugin(tenant, "echo", plugins::ECHO, ""));
        tenants.push_str(&format!(
            "[tenants.{tenant}.routes.\"/echo\"]\nplugin = \"echo\"\n"
        ));
    }
    tenants.push_str(&plugin("race", "hostile", plugins::HOSTILE, ""));
    tenants.push_str("[tenants.race.routes.\"/slow\"]\nplugin = \"hostile\"\n");
    tenants.push_str(
        r#"
[limits]
max_connections = 12
handshake_timeout = "300ms"

[tenants.rate.limits]
message_rate = 1
message_burst = 5
[tenants.cap.limits]
max_connections = 2
[tenants.race.limits]
max_connections = 2
[tenants.idle.limits]
idle_timeout = "300ms"
[tenants.age.limits]
max_connection_age = "500ms"
[tenants.origin.limits]
allowed_origins = ["https://app.example"]
[tenants.slow.limits]
max_message_bytes = 65536
outbound_queue_bytes = 65536
write_timeout = "300ms"
ping_interval = "200ms"
[tenants.frames.limits]
max_message_bytes = 4096
max_frame_bytes = 1024
[tenants.slow.credentials]
bearer_keys = ["slow-key"]
"#,
    );
    config(&tenants)
}

/// Within the burst messages pass; beyond it one error frame tells the client, the rest
/// are dropped silently; a client that keeps flooding is closed with 1008.
#[tokio::test]
async fn message_rate_then_flood_close() {
    let gateway = Gateway::start(&limits_config()).await;
    let mut client = gateway.connect("/rate/echo").await;
    for i in 0..20 {
        send_text(&mut client, &format!("m{i}")).await;
    }
    for i in 0..5 {
        assert_eq!(recv_text(&mut client).await, format!("m{i}"));
    }
    let error = recv_json(&mut client).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests"),
        "{error}"
    );
    let frame = expect_close(&mut client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "message rate exceeded")
    );
    let text = gateway.metrics().await;
    assert!(
        text.contains(r#"wsgate_limits_hit_total{tenant="rate",limit="message_flood"} 1"#),
        "{text}"
    );
}

/// The tenant's connection cap answers 429 before the upgrade; a freed slot is reusable.
#[tokio::test]
async fn tenant_connection_cap_is_429() {
    let gateway = Gateway::start(&limits_config()).await;
    let mut first = gateway.connect("/cap/echo").await;
    let _second = gateway.connect("/cap/echo").await;
    let (status, body) = gateway.refused(gateway.url("/cap/echo")).await;
    assert_eq!(status, 429, "{body}");
    // Other tenants are not affected.
    let mut other = gateway.connect("/rate/echo").await;
    assert_eq!(ask(&mut other, "ok").await, "ok");
    first.close(None).await.unwrap();
    // The slot frees once the close is processed: retry until then, boundedly.
    let mut reconnected = false;
    for _ in 0..200 {
        if tokio_tungstenite::connect_async(gateway.url("/cap/echo"))
            .await
            .is_ok()
        {
            reconnected = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(reconnected, "the freed slot was never reusable");
}

/// The gateway-wide cap answers 503 across tenants.
#[tokio::test]
async fn gateway_connection_cap_is_503() {
    let gateway = Gateway::start(&limits_config()).await;
    let mut open = Vec::new();
    for tenant in ["rate", "idle", "origin", "slow", "rate", "origin"] {
        for _ in 0..2 {
            if open.len() < 12 {
                open.push(gateway.connect(&format!("/{tenant}/echo")).await);
            }
        }
    }
    assert_eq!(open.len(), 12);
    let (status, _) = gateway.refused(gateway.url("/rate/echo")).await;
    assert_eq!(status, 503);
}

/// Silence closes with 1001 after the idle timeout; age closes with 1001 even when busy.
#[tokio::test]
async fn idle_and_age_close_with_1001() {
    let gateway = Gateway::start(&limits_config()).await;
    let mut idle = gateway.connect("/idle/echo").await;
    let frame = expect_close(&mut idle).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "idle timeout")
    );

    let mut busy = gateway.connect("/age/echo").await;
    let frame = loop {
        busy.send(Message::text("tick")).await.unwrap();
        match crate::harness::recv(&mut busy).await {
            Message::Close(Some(frame)) => break frame,
            Message::Text(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "maximum connection age reached")
    );
}

/// Browsers from origins not on the allow-list get 403; allowed origins and clients
/// without an Origin connect.
#[tokio::test]
async fn origin_allow_list() {
    let gateway = Gateway::start(&limits_config()).await;
    let with_origin = |origin: &str| {
        let mut request = gateway.url("/origin/echo").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    assert_eq!(
        gateway.refused(with_origin("https://evil.example")).await.0,
        403
    );
    let (mut allowed, _) = tokio_tungstenite::connect_async(with_origin("https://app.example"))
        .await
        .unwrap();
    assert_eq!(ask(&mut allowed, "hi").await, "hi");
    let mut no_origin = gateway.connect("/origin/echo").await;
    assert_eq!(ask(&mut no_origin, "hi").await, "hi");
}

/// A URI over the limit gets 414.
#[tokio::test]
async fn long_uri_is_414() {
    let gateway = Gateway::start(&limits_config()).await;
    let answer = gateway
        .raw_http(&format!(
            "GET /rate/echo?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "q".repeat(9000)
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer:.60}");
}

/// A client that reads nothing fills its queue (POST answers 429) and is dropped after
/// the write timeout, freeing its memory; the log says why.
#[tokio::test]
async fn slow_consumer_is_dropped() {
    let gateway = Gateway::start_binary(&limits_config()).await;
    let mut client = gateway.connect("/slow/echo").await;
    assert_eq!(ask(&mut client, "hi").await, "hi");
    let http = reqwest::Client::new();
    let list: serde_json::Value = http
        .get(format!("http://{}/slow/@connections", gateway.admin))
        .bearer_auth("slow-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["items"][0]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("http://{}/slow/@connections/{id}", gateway.admin);
    let mut saw_429 = false;
    for _ in 0..5000 {
        let status = http
            .post(&url)
            .bearer_auth("slow-key")
            .body(vec![b'x'; 60_000])
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            200 => continue,
            429 => saw_429 = true,
            410 => break,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(saw_429, "the full queue answered 429");
    gateway
        .logs
        .wait_for("about the slow consumer", |l| {
            l.contains("slow consumer") || l.contains("no answer to the last ping")
        })
        .await;
    // Once dropped, the id is gone (each probe is a round trip; the loop is bounded).
    let mut gone = false;
    for _ in 0..5000 {
        if http
            .post(&url)
            .bearer_auth("slow-key")
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            == 410
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "the slow consumer was dropped");
    let text = gateway.metrics().await;
    assert!(
        text.contains(r#"wsgate_connections_closed_total{tenant="slow",code="1008"}"#)
            || text.contains(r#"wsgate_connections_closed_total{tenant="slow",code="1006"}"#),
        "{text}"
    );
    drop(client);
}

/// A peer that stops answering pings is found dead at the next ping and dropped.
#[tokio::test]
async fn unresponsive_peer_is_dropped() {
    let gateway = Gateway::start_binary(&limits_config()).await;
    // Connected, but never polled again: it answers no ping.
    let silent = gateway.connect("/slow/echo").await;
    gateway
        .logs
        .wait_for("about the missing pong", |l| {
            l.contains("no answer to the last ping")
        })
        .await;
    let text = gateway.metrics().await;
    assert!(
        text.contains(r#"wsgate_connections_closed_total{tenant="slow",code="1006"} 1"#),
        "{text}"
    );
    drop(silent);
}

/// One frame over `max_frame_bytes` closes with 1009, while the same message split into
/// smaller frames passes (up to `max_message_bytes`).
#[tokio::test]
async fn frame_cap_is_separate_from_message_cap() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let gateway = Gateway::start(&limits_config()).await;
    let mut client = gateway.connect("/frames/echo").await;
    let part = "p".repeat(1000);
    client
        .send(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    client
        .send(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
    client
        .send(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut client).await.len(), 3000);
    client.send(Message::text("q".repeat(2000))).await.unwrap();
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1009);
}

/// A client that opens TCP and never sends its upgrade is dropped after the handshake
/// timeout.
#[tokio::test]
async fn silent_tcp_client_is_dropped() {
    use tokio::io::AsyncReadExt;
    let gateway = Gateway::start(&limits_config()).await;
    let mut tcp = tokio::net::TcpStream::connect(gateway.ws).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(crate::harness::WAIT, tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the gateway closed the idle socket: {read:?}"
    );
}

/// Sockets that have not finished their upgrade hold a slot under the gateway's cap:
/// before, 12 silent sockets held 12 descriptors and the cap still let the next upgrade
/// in, so a flood of half-open sockets could exhaust descriptors under any cap.
#[tokio::test]
async fn sockets_still_in_their_upgrade_count_toward_the_cap() {
    let text = limits_config().replace(
        "handshake_timeout = \"300ms\"",
        "handshake_timeout = \"30s\"",
    );
    let gateway = Gateway::start(&text).await;
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(tokio::net::TcpStream::connect(gateway.ws).await.unwrap());
    }
    let (status, body) = gateway.refused(gateway.url("/rate/echo")).await;
    assert_eq!(status, 503, "{body}");
    drop(silent);
    // The slots free once the gateway sees the sockets close: retry until then, boundedly.
    let mut reconnected = false;
    for _ in 0..200 {
        if tokio_tungstenite::connect_async(gateway.url("/rate/echo"))
            .await
            .is_ok()
        {
            reconnected = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(reconnected, "the freed slots were never reusable");
}

/// Upgrades racing each other cannot overshoot a tenant's cap: the slot is taken before
/// `$connect` runs. Before, the count was checked before `$connect` and the connection
/// registered after it, so upgrades in flight together all passed the check.
#[tokio::test]
async fn concurrent_upgrades_cannot_overshoot_the_tenant_cap() {
    let gateway = Gateway::start(&limits_config()).await;
    // Ten at once: under the gateway's cap of 12, so only the tenant's cap refuses.
    // Each `$connect` computes for 20 ms, so the upgrades overlap.
    let url = gateway.url("/race/slow?spin_ms=20");
    let attempts = (0..10).map(|_| tokio_tungstenite::connect_async(&url));
    let results = futures_util::future::join_all(attempts).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for result in results {
        match result {
            Ok((client, _)) => open.push(client),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429);
                refused += 1;
            }
            Err(other) => panic!("expected an upgrade or a 429, got {other}"),
        }
    }
    assert_eq!((open.len(), refused), (2, 8), "the cap of 2 held");
}
