//! Metrics that tell the truth (issue 14): each one is held against the traffic this
//! test made, on a gateway of its own.

use crate::harness::{Gateway, ask, config, http, own_id, plugin};
use crate::plugins;

/// The value of the series `name{labels}`, 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn each_metric_moves_as_the_traffic_it_counts() {
    let mut tenants = plugin("demo", "echo", plugins::ECHO, "");
    tenants.push_str(&plugin("demo", "id", plugins::CONNECTION_ID, ""));
    tenants.push_str(
        "[tenants.demo.credentials]\nbearer_keys = [\"demo-key\"]\n\
         [tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n\
         [tenants.demo.routes.\"/id\"]\nplugin = \"id\"\n",
    );
    let gateway = Gateway::start_binary(&config(&tenants)).await;

    // Two connections; 10 echoes of 100 bytes on one; one id question on the other.
    let mut echo = gateway.connect("/demo/echo").await;
    let mut other = gateway.connect("/demo/id").await;
    let payload = "x".repeat(100);
    for _ in 0..10 {
        assert_eq!(ask(&mut echo, &payload).await, payload);
    }
    let id = own_id(&mut other).await;
    let id_answer = format!("{{\"connection_id\":\"{id}\"}}").len();
    // One management POST of 5 bytes, which the client receives.
    let (status, _, _) = http(
        "POST",
        &format!("http://{}/demo/@connections/{id}", gateway.admin),
        &[("authorization".into(), "Bearer demo-key".into())],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(crate::harness::recv_text(&mut other).await, "hello");
    // Refused upgrades: an unknown tenant (no tenant yet) and an unknown route of demo.
    assert_eq!(gateway.refused(gateway.url("/nobody/echo")).await.0, 404);
    assert_eq!(gateway.refused(gateway.url("/demo/none")).await.0, 404);

    // A management call with a wrong key: counted, but for no tenant.
    let (status, _, _) = http(
        "GET",
        &format!("http://{}/demo/@connections", gateway.admin),
        &[("authorization".into(), "Bearer wrong".into())],
        vec![],
    )
    .await;
    assert_eq!(status, 403);
    let text = gateway.metrics().await;
    let demo = |name: &str| value(&text, &format!("{name}{{tenant=\"demo\"}}"));
    assert_eq!(demo("wsgate_connections"), 2.0, "{text}");
    assert_eq!(demo("wsgate_messages_received_total"), 11.0);
    assert_eq!(demo("wsgate_message_bytes_received_total"), 1002.0);
    assert_eq!(demo("wsgate_messages_sent_total"), 12.0);
    assert_eq!(
        demo("wsgate_message_bytes_sent_total"),
        (1000 + id_answer + 5) as f64
    );
    let upgrades = |tenant: &str, status: u16| {
        value(
            &text,
            &format!("wsgate_upgrades_total{{tenant=\"{tenant}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(upgrades("demo", 101), 2.0, "{text}");
    let api = |tenant: &str, status: u16| {
        value(
            &text,
            &format!("wsgate_api_requests_total{{tenant=\"{tenant}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(api("demo", 200), 1.0, "{text}");
    assert_eq!(api("", 403), 1.0);
    assert_eq!(upgrades("demo", 404), 1.0);
    assert_eq!(upgrades("", 404), 1.0);
    let events = |plugin: &str, event: &str| {
        value(
            &text,
            &format!(
                "wsgate_plugin_event_duration_seconds_count{{tenant=\"demo\",plugin=\"{plugin}\",event=\"{event}\"}}"
            ),
        )
    };
    assert_eq!(events("echo", "message"), 10.0, "{text}");
    assert_eq!(events("id", "message"), 1.0);
    // Both routes' plugins also handle $connect (a default that accepts).
    assert_eq!(events("echo", "connect"), 1.0);
    assert_eq!(events("echo", "disconnect"), 0.0);
}
