//! Routing: tenant and path templates before the upgrade, and the route selection
//! expression after it.

use crate::harness::{Gateway, ask, recv_json, send_text};
use crate::standard_config;

/// Unknown tenants and paths get 404 before the upgrade.
#[tokio::test]
async fn unknown_tenant_or_route_is_404() {
    let gateway = Gateway::start(&standard_config()).await;
    for path in [
        "/nobody/echo",
        "/demo/nothing",
        "/demo",
        "/demo/chat",
        "/demo/chat/a/b",
        "/",
    ] {
        let (status, body) = gateway.refused(gateway.url(path)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}

/// A request that is not a proper upgrade gets 400 (or 426 without `Upgrade`).
#[tokio::test]
async fn malformed_upgrades_are_refused() {
    let gateway = Gateway::start(&standard_config()).await;
    let answer = gateway
        .raw_http("GET /demo/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("Sec-WebSocket-Key"), "{answer}");
    let answer = gateway
        .raw_http("GET /demo/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    let answer = gateway.raw_http("this is not http\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let huge = format!(
        "GET /demo/echo HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(gateway.raw_http(&huge).await.starts_with("HTTP/1.1 431 "));
    let answer = gateway
        .raw_http("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("OK"),
        "{answer}"
    );
}

/// `$request.body.action` picks the plugin; anything else falls back to `$default`.
#[tokio::test]
async fn selection_expression_picks_the_plugin() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/game").await;
    send_text(&mut client, r#"{"action":"whoami"}"#).await;
    assert!(recv_json(&mut client).await["connection_id"].is_string());
    assert_eq!(
        ask(&mut client, r#"{"action":"other"}"#).await,
        r#"{"action":"other"}"#
    );
    assert_eq!(ask(&mut client, "not json").await, "not json");
    // The probe plugin reports the route key it was selected by.
    assert_eq!(
        ask(&mut client, r#"{"action":"probe"}"#).await,
        r#"unknown command: {"action":"probe"}"#
    );
}

/// With no `$default`, an unmatched message gets AWS's "Forbidden" error frame and the
/// connection stays open.
#[tokio::test]
async fn unmatched_message_without_default_is_forbidden() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/strict").await;
    send_text(&mut client, r#"{"action":"nope"}"#).await;
    let error = recv_json(&mut client).await;
    assert_eq!(error["message"], "Forbidden");
    assert!(
        error["connectionId"].is_string() && error["requestId"].is_string(),
        "{error}"
    );
    send_text(&mut client, r#"{"action":"whoami"}"#).await;
    assert_eq!(
        recv_json(&mut client).await["connection_id"],
        error["connectionId"]
    );
}

/// `GET /health` answers 200 `OK` on both listeners, and start-up logs the open files
/// limit that caps connections.
#[tokio::test]
async fn health_on_both_listeners() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    gateway
        .logs
        .wait_for("the open files limit", |l| {
            l.contains("open files limit") && l.contains("limit=")
        })
        .await;
    for addr in [gateway.ws, gateway.admin] {
        let response = reqwest::get(format!("http://{addr}/health")).await.unwrap();
        assert_eq!(response.status(), 200, "{addr}");
        assert_eq!(response.text().await.unwrap(), "OK", "{addr}");
    }
}

/// `$connect` may choose one of the offered subprotocols and add response headers; a
/// subprotocol the client did not offer, or a status outside 400–599, is the plugin's
/// bug and answers 500.
#[tokio::test]
async fn connect_chooses_subprotocol_and_headers() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gateway = Gateway::start(&standard_config()).await;
    let request = |query: &str| {
        let mut request = gateway
            .url(&format!("/demo/probe?{query}"))
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "v1.chat, v2.chat".parse().unwrap(),
        );
        request
    };
    let (mut client, response) = tokio_tungstenite::connect_async(request("subprotocol=v2.chat"))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2.chat");
    assert_eq!(response.headers()["x-probe"], "yes");
    let info = ask(&mut client, "list").await;
    assert!(!info.is_empty());

    assert_eq!(gateway.refused(request("subprotocol=v3.chat")).await.0, 500);
    assert_eq!(
        gateway.refused(request("reject=403")).await,
        (403, "rejected by request".to_owned())
    );
    assert_eq!(gateway.refused(request("reject=200")).await.0, 500);
}
