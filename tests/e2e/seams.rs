//! What the gateway's seams promise users: the open-connections gauge tells the truth
//! however connections end, one close rule holds for plugins and the management API,
//! and a swapped config reaches live connections at their next event.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, WAIT, ask, expect_close, http, own_id, plugin, recv_json};
use crate::{plugins, standard_config};

/// The value of `wsgate_connections{tenant="demo"}`, 0 when the series is absent.
async fn open_gauge(gateway: &Gateway) -> i64 {
    let text = gateway.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(r#"wsgate_connections{tenant="demo"} "#))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Waits (bounded) until the gauge reads `expected`: a connection leaves the registry
/// once its `$disconnect` has run, just after the client saw its close.
async fn gauge_reaches(gateway: &Gateway, expected: i64, after: &str) {
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            if open_gauge(gateway).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "after {after}: wsgate_connections reads {} instead of {expected}",
        open_gauge(gateway).await
    );
}

/// The gauge equals the number of open connections after opens, a clean close, an
/// aborted TCP connection, refused upgrades and a management delete (it used to count
/// only down, reading -N after N closes).
#[tokio::test]
async fn the_open_connections_gauge_counts_every_way_in_and_out() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut a = gateway.connect("/demo/connections").await;
    let mut b = gateway.connect("/demo/echo").await;
    let c = gateway.connect("/demo/echo").await;
    let mut d = gateway.connect("/demo/echo").await;
    gauge_reaches(&gateway, 4, "four opens").await;

    b.close(None).await.unwrap();
    let _ = expect_close_or_end(&mut b).await;
    gauge_reaches(&gateway, 3, "a clean close").await;

    // A client that vanishes without a close frame.
    let mut tcp = c.into_inner();
    match &mut tcp {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => stream.shutdown().await.unwrap(),
        _ => unreachable!("plain TCP"),
    }
    drop(tcp);
    gauge_reaches(&gateway, 2, "an aborted TCP connection").await;

    let (status, _) = gateway.refused(gateway.url("/demo/probe?reject=401")).await;
    assert_eq!(status, 401);
    let (status, _) = gateway.refused(gateway.url("/demo/private")).await;
    assert_eq!(status, 401);
    gauge_reaches(&gateway, 2, "refused upgrades").await;

    let id = own_id(&mut a).await;
    let (status, _, _) = http(
        "DELETE",
        &format!("http://{}/demo/@connections/{id}", gateway.admin),
        &[("authorization".into(), "Bearer demo-key".into())],
        vec![],
    )
    .await;
    assert_eq!(status, 204);
    expect_close(&mut a).await;
    // Gone from the client's side too, so the server's close handshake ends at once.
    drop(a);
    gauge_reaches(&gateway, 1, "a management delete").await;

    assert_eq!(ask(&mut d, "still here").await, "still here");
}

/// The peer's answer to our close, or the end of the stream.
async fn expect_close_or_end(client: &mut crate::harness::Client) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = client.next().await {
            if message.is_close() {
                return;
            }
        }
    })
    .await;
}

/// Plugins and the management API accept the same codes: 1000 and 3000-4999 (the
/// management API used to refuse 3000-3999 that plugins could send).
#[tokio::test]
async fn one_close_rule_for_plugins_and_the_management_api() {
    let gateway = Gateway::start(&standard_config()).await;
    let delete = |id: &str, query: &str| {
        let url = format!("http://{}/demo/@connections/{id}?{query}", gateway.admin);
        async move {
            http(
                "DELETE",
                &url,
                &[("authorization".into(), "Bearer demo-key".into())],
                vec![],
            )
            .await
        }
    };
    for (code, accepted) in [(1000, true), (3000, true), (3999, true), (4999, true)] {
        let mut client = gateway.connect("/demo/connections").await;
        let id = own_id(&mut client).await;
        let (status, _, body) = delete(&id, &format!("code={code}&reason=r{code}")).await;
        assert_eq!(status, 204, "code {code}: {body}");
        let frame = expect_close(&mut client).await;
        assert_eq!(u16::from(frame.code), code);
        assert_eq!(frame.reason.as_str(), format!("r{code}"));
        assert!(accepted);
    }
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    for query in ["code=1001", "code=2999", "code=5000", "code=abc"] {
        let (status, kind, body) = delete(&id, query).await;
        assert_eq!(
            (status, kind.as_deref()),
            (400, Some("BadRequestException")),
            "{query}: {body}"
        );
        assert!(body.contains("1000 or 3000-4999"), "{query}: {body}");
    }
    let long = "x".repeat(124);
    let (status, _, body) = delete(&id, &format!("reason={long}")).await;
    assert_eq!(status, 400, "{body}");

    let mut probe = gateway.connect("/demo/probe").await;
    for code in [1001, 2999, 5000] {
        assert_eq!(
            ask(&mut probe, &format!("kick {id} {code} no")).await,
            "error: invalid-argument"
        );
    }
    assert_eq!(ask(&mut probe, &format!("kick {id} 3001 bye")).await, "ok");
    let frame = expect_close(&mut client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (3001, "bye")
    );
}

const CREDENTIALS: &str = "[tenants.demo.credentials]\nbearer_keys = [\"demo-key\"]\n";

/// A config whose `/echo` route runs `plugin` for tenant demo.
fn echo_route_runs(name: &str, path: &str) -> String {
    let mut text = plugin("demo", name, path, "");
    text.push_str(CREDENTIALS);
    text.push_str(&format!(
        "[tenants.demo.routes.\"/echo\"]\nplugin = \"{name}\"\n[tenants.demo.routes.\"/added\"]\nplugin = \"{name}\"\n"
    ));
    crate::harness::config(&text)
}

/// A new snapshot swapped in under a live connection: its next message runs the new
/// route's plugin, the old route's connection stays open, and a route added by the
/// snapshot accepts connections at once.
#[tokio::test]
async fn a_swapped_snapshot_reaches_live_connections_at_their_next_event() {
    let mut first = crate::harness::config(&plugin("demo", "echo", plugins::ECHO, ""));
    first.push_str(CREDENTIALS);
    first.push_str("[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n");
    let gateway = Gateway::start(&first).await;
    let mut live = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut live, "before").await, "before");
    let refused = gateway.refused(gateway.url("/demo/added")).await;
    assert_eq!(refused.0, 404);

    let text = echo_route_runs("ids", plugins::CONNECTION_ID);
    let dir = tempfile::tempdir().unwrap();
    let config = wsgate::Config::parse(&text, &dir.path().join("next.toml"), dir.path()).unwrap();
    let internals = gateway.internals();
    let snapshot = internals.build(&config).expect("the second config loads");
    internals.swap(snapshot);

    live.send(Message::text("after")).await.unwrap();
    let reply = recv_json(&mut live).await;
    assert!(
        reply["connection_id"].is_string(),
        "the live connection's next event ran the new plugin: {reply}"
    );
    let mut added = gateway.connect("/demo/added").await;
    let id = own_id(&mut added).await;
    assert_eq!(id.len(), 22);
    // The registry outlived the swap: the management API still finds the live one.
    let live_id = reply["connection_id"].as_str().unwrap();
    let (status, _, body) = http(
        "GET",
        &format!("http://{}/demo/@connections/{live_id}", gateway.admin),
        &[("authorization".into(), "Bearer demo-key".into())],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A client's own close code is counted as `other`: clients cannot add metric series at
/// will (each code used to be a series of its own). Registered codes keep their number.
#[tokio::test]
async fn client_chosen_close_codes_fold_into_other() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let gateway = Gateway::start(&standard_config()).await;
    for code in [4321u16, 3999, 1000] {
        let mut client = gateway.connect("/demo/echo").await;
        client
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            }))
            .await
            .unwrap();
        expect_close_or_end(&mut client).await;
    }
    let folded = tokio::time::timeout(WAIT, async {
        loop {
            let text = gateway.metrics().await;
            if text.contains(r#"wsgate_connections_closed_total{tenant="demo",code="other"} 2"#)
                && text.contains(r#"wsgate_connections_closed_total{tenant="demo",code="1000"} 1"#)
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let text = folded.unwrap_or_default();
    assert!(!text.contains("code=\"4321\""), "{text}");
}
