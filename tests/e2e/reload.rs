//! Changing a running gateway (issue 14): a reload (`POST /-/reload` with the operator
//! key, or `SIGHUP`) re-reads the config and every plugin while connections stay open;
//! a broken config or plugin is refused and the running one keeps serving; a removed
//! route's clients are served until the grace ends, then closed with 1001; draining
//! (`POST /-/drain`, `SIGTERM`) turns `/ready` to 503 and refuses new clients while the
//! open ones are served, and what the API accepted is delivered before the close.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    Gateway, OPS_KEY, WAIT, ask, config, expect_close, http, own_id, plugin, recv_text,
};
use crate::plugins;

/// Tenant `demo` (key `demo-key`) with plugin `p` at `path` on route `/r`, an echo on
/// `/echo`, plus `extra` (more tables) and `lifecycle` (lines of `[lifecycle]`).
fn demo(path: &str, lifecycle: &str, extra: &str) -> String {
    let mut tenants = format!("[lifecycle]\n{lifecycle}\n\n");
    tenants.push_str(&plugin("demo", "p", path, ""));
    tenants.push_str(&plugin("demo", "echo", plugins::ECHO, ""));
    tenants.push_str(
        "[tenants.demo.credentials]\nbearer_keys = [\"demo-key\"]\n\
         [tenants.demo.routes.\"/r\"]\nplugin = \"p\"\n\
         [tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n",
    );
    tenants.push_str(extra);
    config(&tenants)
}

/// `POST /-/{action}` with `key`: status and JSON body.
async fn operate(gateway: &Gateway, action: &str, key: Option<&str>) -> (u16, Value) {
    let headers: Vec<(String, String)> = key
        .map(|k| vec![("authorization".to_owned(), format!("Bearer {k}"))])
        .unwrap_or_default();
    let (status, _, body) = http(
        "POST",
        &format!("http://{}/-/{action}", gateway.admin),
        &headers,
        vec![],
    )
    .await;
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, body)
}

/// Writes `text` as the gateway's config and reloads through the API.
async fn reload_with(gateway: &Gateway, text: &str) -> (u16, Value) {
    std::fs::write(gateway.config_file(), text).unwrap();
    operate(gateway, "reload", Some(OPS_KEY)).await
}

/// The value of the metric line starting with `prefix`, 0 when absent.
async fn metric(gateway: &Gateway, prefix: &str) -> f64 {
    let text = gateway.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `GET /ready` on a listener: status and body.
async fn ready(addr: std::net::SocketAddr) -> (u16, String) {
    let (status, _, body) = http("GET", &format!("http://{addr}/ready"), &[], vec![]).await;
    (status, body.trim().to_owned())
}

fn names(report: &Value, what: &str, change: &str) -> Vec<String> {
    report[what][change]
        .as_array()
        .unwrap_or_else(|| panic!("no {what}.{change} in {report}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_reload_keeps_connections_open_and_their_next_message_runs_the_new_plugin() {
    let gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let mut client = gateway.connect("/demo/r").await;
    assert_eq!(ask(&mut client, "before").await, "before");

    let (status, report) = reload_with(&gateway, &demo(plugins::CONNECTION_ID, "", "")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(names(&report, "plugins", "replaced"), ["demo/p"]);
    assert_eq!(names(&report, "plugins", "unchanged"), ["demo/echo"]);
    assert!(names(&report, "routes", "added").is_empty(), "{report}");
    assert!(report["took_ms"].is_u64(), "{report}");

    // The same socket, never closed: its next message runs the new plugin.
    let answer: Value = serde_json::from_str(&ask(&mut client, "after").await).unwrap();
    assert!(answer["connection_id"].is_string(), "{answer}");
    gateway
        .logs
        .wait_for("the reload's log line", |l| {
            l.contains("reloaded") && l.contains("took_ms")
        })
        .await;
    assert_eq!(
        metric(&gateway, "wsgate_reloads_total{result=\"ok\"} ").await,
        1.0
    );
}

#[tokio::test]
async fn an_unchanged_plugin_is_kept_not_compiled_again() {
    let gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let (status, report) = reload_with(&gateway, &demo(plugins::ECHO, "", "")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        names(&report, "plugins", "unchanged"),
        ["demo/echo", "demo/p"]
    );
    assert!(names(&report, "plugins", "replaced").is_empty(), "{report}");
    // Both plugins use one file: it is reused from the running config, not compiled
    // or read from the compile cache again.
    gateway
        .logs
        .wait_for("a plugin kept from the running config", |l| {
            l.contains("plugin loaded") && l.contains("kept")
        })
        .await;
    let mut client = gateway.connect("/demo/r").await;
    assert_eq!(ask(&mut client, "still").await, "still");
}

#[tokio::test]
async fn a_broken_config_or_plugin_is_refused_and_the_running_one_keeps_serving() {
    let mut gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let mut client = gateway.connect("/demo/r").await;

    // A syntax error: the file is named.
    let (status, body) = reload_with(&gateway, "[listen\n").await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("reload refused") && message.contains("wsgate.toml"),
        "{message}"
    );

    // A plugin that is not a component: the file, the key and the reason.
    let junk = gateway.config_file().with_file_name("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (status, body) = reload_with(&gateway, &demo(junk.to_str().unwrap(), "", "")).await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("tenants.demo.plugins.p.path") && message.contains("component"),
        "{message}"
    );

    // A reference to a plugin that does not exist.
    let dangling = demo(
        plugins::ECHO,
        "",
        "[tenants.demo.routes.\"/x\"]\nplugin = \"nope\"\n",
    );
    let (status, body) = reload_with(&gateway, &dangling).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");

    // SIGHUP with the broken file: logged, refused, and the process lives on.
    std::fs::write(gateway.config_file(), "[listen\n").unwrap();
    gateway.send_signal(libc::SIGHUP);
    // The three refusals through the API logged the same line: wait for the fourth.
    let refused = tokio::time::timeout(WAIT, async {
        while gateway.logs.count(|l| l.contains("reload refused")) < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "the SIGHUP reload was not refused in the log"
    );
    assert!(gateway.running(), "SIGHUP ended the gateway");

    // The old config serves on: the open socket and new ones.
    assert_eq!(ask(&mut client, "still here").await, "still here");
    let mut fresh = gateway.connect("/demo/r").await;
    assert_eq!(ask(&mut fresh, "new").await, "new");
    assert_eq!(
        metric(&gateway, "wsgate_reloads_total{result=\"refused\"} ").await,
        4.0
    );
    assert_eq!(
        metric(&gateway, "wsgate_reloads_total{result=\"ok\"} ").await,
        0.0
    );
}

#[tokio::test]
async fn sighup_reloads_and_never_ends_the_process() {
    let mut gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let added = "[tenants.demo.routes.\"/added\"]\nplugin = \"echo\"\n";
    std::fs::write(gateway.config_file(), demo(plugins::ECHO, "", added)).unwrap();
    for _ in 0..3 {
        gateway.send_signal(libc::SIGHUP);
    }
    gateway
        .logs
        .wait_for("a SIGHUP reload", |l| l.contains("reloaded"))
        .await;
    let mut client = gateway.connect("/demo/added").await;
    assert_eq!(ask(&mut client, "new route").await, "new route");
    assert!(gateway.running(), "SIGHUP ended the gateway");
}

#[tokio::test]
async fn added_tenants_keys_and_limits_take_effect_at_once() {
    let gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let list = |tenant: &'static str, key: &'static str| {
        let url = format!("http://{}/{tenant}/@connections", gateway.admin);
        async move {
            http(
                "GET",
                &url,
                &[("authorization".into(), format!("Bearer {key}"))],
                vec![],
            )
            .await
            .0
        }
    };
    assert_eq!(list("demo", "demo-key").await, 200);
    let beta = format!(
        "{}[tenants.beta.credentials]\nbearer_keys = [\"beta-key\"]\n\
         [tenants.beta.limits]\nmax_connections = 1\n\
         [tenants.beta.routes.\"/echo\"]\nplugin = \"echo\"\n",
        plugin("beta", "echo", plugins::ECHO, "")
    );
    // demo's key is rotated, beta is added with a cap of one connection.
    let text = demo(plugins::ECHO, "", &beta).replace("demo-key", "demo-key-2");
    let (status, report) = reload_with(&gateway, &text).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(names(&report, "tenants", "added"), ["beta"]);
    assert_eq!(names(&report, "tenants", "changed"), ["demo"]);

    assert_eq!(
        list("demo", "demo-key").await,
        403,
        "the old key still works"
    );
    assert_eq!(list("demo", "demo-key-2").await, 200);
    assert_eq!(list("beta", "beta-key").await, 200);
    let mut first = gateway.connect("/beta/echo").await;
    assert_eq!(ask(&mut first, "beta").await, "beta");
    let (status, _) = gateway.refused(gateway.url("/beta/echo")).await;
    assert_eq!(status, 429, "beta's max_connections = 1 is not in force");
}

#[tokio::test]
async fn a_removed_route_is_served_through_its_grace_then_closed_with_1001() {
    let grace = "reload_grace = \"3s\"";
    let old = demo(
        plugins::ECHO,
        grace,
        &format!(
            "{}[tenants.gone.routes.\"/echo\"]\nplugin = \"echo\"\n",
            plugin("gone", "echo", plugins::ECHO, "")
        ),
    );
    let gateway = Gateway::start_binary(&old).await;
    let mut on_route = gateway.connect("/demo/r").await;
    let mut on_tenant = gateway.connect("/gone/echo").await;
    let mut staying = gateway.connect("/demo/echo").await;

    // The new config has neither /demo/r nor tenant `gone`.
    let new = config(&format!(
        "[lifecycle]\n{grace}\n\n{}[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n",
        plugin("demo", "echo", plugins::ECHO, "")
    ));
    let (status, report) = reload_with(&gateway, &new).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        names(&report, "routes", "removed"),
        ["demo /r", "gone /echo"]
    );
    assert_eq!(names(&report, "tenants", "removed"), ["gone"]);
    assert_eq!(report["retiring_connections"], 2, "{report}");

    // During the grace, the removed routes still serve the clients they have, with the
    // plugin they had; new clients are not let in.
    assert_eq!(ask(&mut on_route, "in grace").await, "in grace");
    assert_eq!(ask(&mut on_tenant, "in grace").await, "in grace");
    let (status, _) = gateway.refused(gateway.url("/demo/r")).await;
    assert_eq!(status, 404);

    let frame = expect_close(&mut on_route).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "route removed by a reload")
    );
    let frame = expect_close(&mut on_tenant).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1001, "tenant removed by a reload")
    );
    assert_eq!(ask(&mut staying, "kept").await, "kept");
    // Once nothing of it is left, what the gateway kept for the tenant goes too.
    drop(on_tenant);
    gateway
        .logs
        .wait_for("the removed tenant forgotten", |line| {
            line.contains("forgot removed tenants") && line.contains("gone")
        })
        .await;
    assert_eq!(
        gateway
            .logs
            .count(|line| line.contains("forgot removed tenants") && line.contains("demo")),
        0
    );
    // Added back, it starts afresh and serves.
    let (status, report) = reload_with(&gateway, &old).await;
    assert_eq!(status, 200, "{report}");
    let mut back = gateway.connect("/gone/echo").await;
    assert_eq!(ask(&mut back, "back").await, "back");
}

#[tokio::test]
async fn reload_and_drain_are_the_operators_alone() {
    let gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    for action in ["reload", "drain"] {
        let (status, _) = operate(&gateway, action, None).await;
        assert_eq!(status, 403, "/-/{action} without a key");
        let (status, _) = operate(&gateway, action, Some("demo-key")).await;
        assert_eq!(status, 403, "/-/{action} with a tenant key");
    }
    let (status, _, _) = http(
        "GET",
        &format!("http://{}/-/reload", gateway.admin),
        &[("authorization".into(), format!("Bearer {OPS_KEY}"))],
        vec![],
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(ready(gateway.admin).await, (200, "ready".into()));
}

#[tokio::test]
async fn a_draining_node_is_not_ready_refuses_new_clients_and_serves_its_own() {
    let gateway = Gateway::start_binary(&demo(plugins::ECHO, "", "")).await;
    let mut client = gateway.connect("/demo/r").await;
    for addr in [gateway.ws, gateway.admin] {
        assert_eq!(ready(addr).await, (200, "ready".into()));
    }
    let (status, body) = operate(&gateway, "drain", Some(OPS_KEY)).await;
    assert_eq!((status, &body["draining"]), (200, &Value::Bool(true)));
    for addr in [gateway.ws, gateway.admin] {
        assert_eq!(ready(addr).await, (503, "draining".into()));
    }
    let (status, _) = gateway.refused(gateway.url("/demo/r")).await;
    assert_eq!(status, 503);
    assert_eq!(ask(&mut client, "still served").await, "still served");
    // /health is liveness: a draining node is alive.
    let (status, _, body) = http(
        "GET",
        &format!("http://{}/health", gateway.admin),
        &[],
        vec![],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "OK"));
}

#[tokio::test]
async fn sigterm_drains_for_the_delay_and_delivers_what_the_api_accepted_before_1001() {
    let mut gateway =
        Gateway::start_binary(&demo(plugins::CONNECTION_ID, "drain_delay = \"3s\"", "")).await;
    let mut client = gateway.connect("/demo/r").await;
    let id = own_id(&mut client).await;

    gateway.send_signal(libc::SIGTERM);
    let not_ready = tokio::time::timeout(WAIT, async {
        while ready(gateway.admin).await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(not_ready.is_ok(), "/ready did not turn 503 after SIGTERM");

    // Still serving through the delay: what the API accepts now reaches the client.
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    for n in 0..20 {
        let (status, _, body) = http(
            "POST",
            &url,
            &[("authorization".into(), "Bearer demo-key".into())],
            format!("queued {n}").into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let status = gateway.exited().await;
    assert!(status.success(), "the gateway exited with {status}");

    // The client reads only now: every accepted message, then the 1001.
    for n in 0..20 {
        assert_eq!(recv_text(&mut client).await, format!("queued {n}"));
    }
    let frame = expect_close(&mut client).await;
    assert_eq!(u16::from(frame.code), 1001);
    assert!(matches!(
        client.next().await,
        None | Some(Ok(Message::Close(_))) | Some(Err(_))
    ));
}

#[tokio::test]
async fn a_moved_listener_serves_at_once_and_its_old_clients_get_1012_after_the_grace() {
    let old = demo(plugins::ECHO, "reload_grace = \"5s\"", "");
    let gateway = Gateway::start_binary(&old).await;
    let mut before = gateway.connect("/demo/echo").await;

    // An address that cannot be bound refuses the reload, naming the key; nothing moves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = old.replacen(
        "ws = \"127.0.0.1:0\"",
        &format!("ws = \"{}\"", taken.local_addr().unwrap()),
        1,
    );
    let (status, body) = reload_with(&gateway, &clash).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("(listen.ws)"),
        "the refusal names the key: {body}"
    );
    assert_eq!(ask(&mut before, "still here").await, "still here");

    let moved = old
        .replacen("ws = \"127.0.0.1:0\"", "ws = \"127.0.0.2:0\"", 1)
        .replacen("admin = \"127.0.0.1:0\"", "admin = \"127.0.0.2:0\"", 1);
    let (status, report) = reload_with(&gateway, &moved).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["needs_restart"], serde_json::json!([]), "{report}");
    assert_eq!(report["restarting_connections"], 1, "{report}");
    let address = |listener: &str| -> std::net::SocketAddr {
        report["listeners_moved"][listener]
            .as_str()
            .unwrap_or_else(|| panic!("no listeners_moved.{listener} in {report}"))
            .parse()
            .unwrap()
    };
    let (ws, admin) = (address("ws"), address("admin"));
    // The old listener's client is served through the grace.
    assert_eq!(ask(&mut before, "in grace").await, "in grace");
    assert_eq!(ws.ip().to_string(), "127.0.0.2");
    assert_eq!(admin.ip().to_string(), "127.0.0.2");

    // The new listeners serve at once; the old ones take no one new.
    let (mut after, _) = tokio_tungstenite::connect_async(format!("ws://{ws}/demo/echo"))
        .await
        .expect("the moved WebSocket listener serves");
    assert_eq!(ask(&mut after, "new").await, "new");
    let (status, _) = ready(admin).await;
    assert_eq!(status, 200, "the moved admin listener serves");
    for old in [gateway.ws, gateway.admin] {
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(old).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{old} still accepts after the move"));
    }

    // Then it is told to reconnect.
    let frame = expect_close(&mut before).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1012, "the gateway moved this listener; reconnect")
    );
    assert_eq!(ask(&mut after, "stays").await, "stays");
}
