//! Failing plugins and broken clients: each fails only its own event or connection,
//! with the right signal, and the gateway keeps serving.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::harness::{Gateway, ask, expect_close, recv_json, send_text};
use crate::standard_config;

/// A trap in `message` fails that event: the client gets AWS's error frame, the
/// connection stays open, the log names tenant, route and connection.
#[tokio::test]
async fn trap_in_message_fails_only_that_event() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut client = gateway.connect("/demo/panic").await;
    let mut bystander = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut client, "before").await, "before");
    send_text(&mut client, "panic").await;
    let error = recv_json(&mut client).await;
    assert_eq!(error["message"], "Internal server error");
    let id = error["connectionId"].as_str().unwrap().to_owned();
    assert_eq!(
        ask(&mut client, "after").await,
        "after",
        "the connection survives the trap"
    );
    assert_eq!(ask(&mut bystander, "still here").await, "still here");

    let line = gateway
        .logs
        .wait_for("about the trap", |l| l.contains("message handler failed"))
        .await;
    for field in [
        "tenant=demo",
        "route=/panic",
        &format!("connection={id}"),
        "kind=trap",
        "asked to panic",
    ] {
        assert!(line.contains(field), "{field} missing from: {line}");
    }
    // Many traps in a row stay contained too.
    for _ in 0..20 {
        send_text(&mut client, "panic").await;
        assert_eq!(
            recv_json(&mut client).await["message"],
            "Internal server error"
        );
    }
    assert_eq!(ask(&mut client, "alive").await, "alive");
}

/// A trap in `$connect` is HTTP 500 before the upgrade.
#[tokio::test]
async fn trap_in_connect_is_500() {
    let gateway = Gateway::start(&standard_config()).await;
    let (status, body) = gateway
        .refused(gateway.url("/demo/panic?panic=connect"))
        .await;
    assert_eq!(status, 500);
    assert!(body.contains("Internal server error"), "{body}");
    let mut client = gateway.connect("/demo/panic").await;
    assert_eq!(ask(&mut client, "fine").await, "fine");
}

/// A trap in `$disconnect` is logged and harms nobody.
#[tokio::test]
async fn trap_in_disconnect_is_logged() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut client = gateway.connect("/demo/panic").await;
    client
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "panic".into(),
        }))
        .await
        .unwrap();
    gateway
        .logs
        .wait_for("about the $disconnect trap", |l| {
            l.contains("$disconnect failed") && l.contains("tenant=demo")
        })
        .await;
    let mut next = gateway.connect("/demo/panic").await;
    assert_eq!(ask(&mut next, "ok").await, "ok");
}

/// A text frame that is not UTF-8 closes the connection with 1007.
#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/echo").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    client.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1007);
}

/// A message over the tenant's max size closes the connection with 1009; one at the
/// limit passes.
#[tokio::test]
async fn oversize_message_closes_1009() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/small/echo").await;
    let at_limit = "a".repeat(1024);
    assert_eq!(ask(&mut client, &at_limit).await, at_limit);
    client.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1009);

    // The default limit is AWS's 128 KiB.
    let mut client = gateway.connect("/demo/echo").await;
    let big = "b".repeat(128 * 1024);
    assert_eq!(ask(&mut client, &big).await.len(), big.len());
    client
        .send(Message::text("c".repeat(128 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(u16::from(expect_close(&mut client).await.code), 1009);
}
