//! `wsgate serve --log-format json`: one JSON object per stderr line, and a
//! connection's lines, its plugin's included, carry its tenant, route and id.

use serde_json::Value;

use crate::harness::{Gateway, ask, config, plugin, recv_json, send_text};
use crate::plugins;

/// Every stderr line parses as JSON, and every line that names the connection carries
/// its tenant, route and id in its span: the plugin's `log` call and stdout, on the
/// normal lane and on the low-priority lane (a task of another runtime, which starts
/// outside any span), and the plugin's failure.
#[tokio::test]
async fn json_lines_carry_the_connection() {
    let text = config(&format!(
        "{}[tenants.demo.routes.\"/hostile\"]\nplugin = \"hostile\"\n",
        plugin(
            "demo",
            "hostile",
            plugins::HOSTILE,
            "limits = { timeout = \"1s\" }"
        )
    ));
    let gateway = Gateway::start_binary_with_args(&text, &["--log-format", "json"]).await;
    let mut client = gateway.connect("/demo/hostile").await;
    // A `log` call and a stdout line, on the normal lane.
    assert_eq!(ask(&mut client, "forge").await, "forged");
    // Computes long enough to put the plugin's next events on the low-priority lane.
    assert_eq!(ask(&mut client, "busy 50").await, "busy");
    assert_eq!(ask(&mut client, "print 2").await, "printed");
    // Runs out of memory there: the event fails, and the client learns its own id.
    send_text(&mut client, "hog").await;
    let frame = recv_json(&mut client).await;
    assert_eq!(frame["message"], "Internal server error", "{frame}");
    let id = frame["connectionId"]
        .as_str()
        .expect("connectionId")
        .to_owned();
    let metrics = gateway.metrics().await;
    let series = r#"wsgate_plugin_heavy_events_total{tenant="demo",plugin="hostile"} "#;
    let heavy: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"));
    assert!(
        heavy >= 2,
        "print and hog ran on the low-priority lane:\n{metrics}"
    );

    let logs = &gateway.logs;
    for (what, marker) in [
        ("of the log call", "forged by log"),
        ("of the guest's stdout", "forged by stdout"),
        ("printed on the low-priority lane", "line 00001"),
        ("of the failure", "message handler failed"),
    ] {
        logs.wait_for(what, |l| l.contains(marker) && l.contains(&id))
            .await;
    }
    let lines = logs.lines();
    let mut about = 0;
    for line in &lines {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(json.is_object(), "{line}");
        if !line.contains(&id) {
            continue;
        }
        about += 1;
        let span = &json["span"];
        assert_eq!(span["tenant"], "demo", "{line}");
        assert_eq!(span["route"], "/hostile", "{line}");
        assert_eq!(span["connection"], id.as_str(), "{line}");
    }
    assert!(about >= 4, "lines about the connection:\n{}", logs.all());
}
