//! The web console (issue 16): its files and their security headers, the endpoints it
//! reads (`/-/me`, `/{tenant}/@stats`, `/-/status`), the operator key acting as any
//! tenant, and the console itself driven in a real headless Chromium by
//! tests/e2e/console.py (Playwright for Python, installed by scripts/setup-console.sh).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::aws_sdk::venv_bin;
use crate::harness::{
    Client, Gateway, OPS_KEY, WAIT, expect_close, http, own_id, recv, recv_text, send_text,
};
use crate::standard_config;

/// What the hostile client sends as its `User-Agent`: the console must show it as text.
const HOSTILE_AGENT: &str = "<img src=x onerror=alert(1)>";

fn bearer(key: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {key}"))]
}

/// `GET {path}` on the admin listener with `key`: status and body as JSON (or text).
async fn get(gateway: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", gateway.admin);
    let (status, _, body) = http("GET", &url, &bearer(key), Vec::new()).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A client on `path` whose upgrade carries `user_agent`.
async fn connect_as(gateway: &Gateway, path: &str, user_agent: &str) -> Client {
    let mut request = gateway.url(path).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("user-agent", user_agent.parse().unwrap());
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade timed out")
        .expect("the upgrade failed");
    client
}

/// The real browser: sign in with `#key=`, see the test's connections, send to one and
/// disconnect it with a code and reason (the client gets both), use Try-it, see the
/// hostile user agent as text with no script run, close all, sign out, the operator's
/// view, a phone's width. The script fails on any console error, alert, or request to
/// a host other than the gateway; its screenshots go to target/tmp/console-screenshots.
#[tokio::test]
async fn the_console_in_a_real_browser() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run scripts/setup-console.sh (scripts/test.sh does) to install Chromium"
    );
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut target = gateway.connect("/demo/connections").await;
    let target_id = own_id(&mut target).await;
    let mut hostile = connect_as(&gateway, "/demo/connections", HOSTILE_AGENT).await;
    let hostile_id = own_id(&mut hostile).await;

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    // Emptied first, so that every screenshot checked below is this run's.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/console.py");
    let run = Command::new(venv_bin("python"))
        .arg(script)
        .args(["--admin", &format!("http://{}", gateway.admin)])
        .args([
            "--tenant",
            "demo",
            "--key",
            "demo-key",
            "--ops-key",
            OPS_KEY,
        ])
        .args(["--target", &target_id, "--hostile", &hostile_id])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT * 12, run)
        .await
        .expect("the browser test did not finish within its bound")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON result from the browser test:\n{stdout}\n{stderr}"));
    assert_eq!(result["ok"], true, "{result}");

    // What the browser did reached the real clients.
    assert_eq!(recv_text(&mut target).await, "hello from the console");
    let close = expect_close(&mut target).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4001, "bye from the console")
    );
    let close = expect_close(&mut hostile).await;
    assert_eq!(
        u16::from(close.code),
        1000,
        "Close all closed the hostile client"
    );
    for name in [
        "connections",
        "details",
        "send",
        "disconnect",
        "try-it",
        "health",
        "operator",
        "phone",
    ] {
        assert!(
            out.join(format!("{name}.png")).exists(),
            "no screenshot {name}.png in {}",
            out.display()
        );
    }
}

/// The files: the page with a policy naming only this gateway's listeners, no sniffing,
/// no framing; a hostile `Host` never reaches the policy; `/ui` redirects; other
/// methods and names are refused with the same headers; `/ui/@connections` stays
/// tenant `ui`'s API.
#[tokio::test]
async fn the_console_files_carry_a_strict_policy() {
    let gateway = Gateway::start(&standard_config()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("http://{}{path}", gateway.admin);

    let page = client.get(url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'self'; script-src 'self';"),
        "{policy}"
    );
    assert!(
        policy.contains(&format!(
            "connect-src 'self' ws://127.0.0.1:{};",
            gateway.ws.port()
        )),
        "Try-it may reach the WebSocket listener and nothing else: {policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.get("set-cookie").is_none());
    let html = page.text().await.unwrap();
    assert!(
        html.contains("app.js") && !html.contains("<script>"),
        "{html}"
    );

    for (name, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let file = client
            .get(url(&format!("/ui/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), 200, "{name}");
        let content_type = file.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{name}: {content_type}");
        assert!(file.headers().contains_key("content-security-policy"));
    }

    // A Host the browser never sent as a name goes nowhere near the header.
    let hostile = client
        .get(url("/ui/"))
        .header("host", "evil.example; script-src *")
        .send()
        .await
        .unwrap();
    let policy = hostile.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        !policy.contains("evil") && !policy.contains("script-src *"),
        "{policy}"
    );
    let named = client
        .get(url("/ui/"))
        .header("host", "gw.example:9090")
        .send()
        .await
        .unwrap();
    let policy = named.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains(&format!("ws://gw.example:{};", gateway.ws.port())),
        "{policy}"
    );

    let bare = client.get(url("/ui")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/ui/");
    let posted = client.post(url("/ui/")).send().await.unwrap();
    assert_eq!(posted.status(), 405);
    assert!(posted.headers().contains_key("content-security-policy"));
    // Raw requests: an HTTP client would resolve the dots itself.
    for path in [
        "/ui/%2e%2e/%2e%2e/etc/passwd",
        "/ui/..%2f..%2fCargo.toml",
        "/ui/%2e%2e",
    ] {
        let escape = gateway
            .raw_admin(&format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(
            escape.starts_with("HTTP/1.1 404"),
            "no way out of the console's four files: {escape}"
        );
    }
    let missing = client.get(url("/ui/secret.txt")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let api = client.get(url("/ui/@connections")).send().await.unwrap();
    assert_eq!(api.status(), 403, "tenant ui's API, not the console");
}

/// `[admin] console = false` turns the console off.
#[tokio::test]
async fn the_console_can_be_turned_off() {
    let config = standard_config().replacen("[admin]\n", "[admin]\nconsole = false\n", 1);
    let gateway = Gateway::start(&config).await;
    let (status, body) = get(&gateway, "/ui/", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("console = false"), "{body}");
}

/// `/-/me` tells the console which view a key opens.
#[tokio::test]
async fn me_says_whose_key_it_is() {
    let gateway = Gateway::start(&standard_config()).await;
    let (status, body) = get(&gateway, "/-/me", "demo-key").await;
    assert_eq!(
        (status, &body),
        (
            200,
            &serde_json::json!({"kind": "tenant", "tenant": "demo"})
        )
    );
    let (status, body) = get(&gateway, "/-/me", OPS_KEY).await;
    assert_eq!(
        (status, &body),
        (200, &serde_json::json!({"kind": "operator"}))
    );
    let (status, body) = get(&gateway, "/-/me", "no-such-key").await;
    assert_eq!(status, 403, "{body}");
}

/// `@stats` holds the figures the tenant's traffic made, for its own keys and the
/// operator's only, without adding series to `/metrics`; the list carries each
/// connection's identity and last activity.
#[tokio::test]
async fn stats_count_the_tenants_own_traffic() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = connect_as(&gateway, "/demo/echo", "stats-test/1.0").await;
    for text in ["one", "two", "three"] {
        send_text(&mut client, text).await;
        assert_eq!(recv_text(&mut client).await, text);
    }
    let mut panicking = gateway.connect("/demo/panic").await;
    send_text(&mut panicking, "panic").await;
    let _ = recv(&mut panicking).await;

    let (status, stats) = get(&gateway, "/demo/@stats", "demo-key").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["tenant"], "demo");
    assert_eq!(stats["connections"], 2, "{stats}");
    assert_eq!(stats["connectionsScope"], "node", "no cluster: {stats}");
    assert_eq!(stats["messagesReceived"], 4, "{stats}");
    assert_eq!(stats["bytesReceived"], 3 + 3 + 5 + 5, "{stats}");
    assert!(stats["messagesSent"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["failures"]["trap"], 1, "{stats}");
    assert_eq!(stats["failures"]["timeout"], 0, "{stats}");
    let routes: Vec<&str> = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"/echo") && routes.contains(&"/chat/{room}"),
        "{stats}"
    );
    assert_eq!(
        stats["websocket"],
        format!("ws://127.0.0.1:{}/demo", gateway.ws.port())
    );

    let (status, other) = get(&gateway, "/demo/@stats", "acme-key").await;
    assert_eq!(status, 403, "another tenant's key: {other}");
    let (status, other) = get(&gateway, "/demo/@stats", OPS_KEY).await;
    assert_eq!(
        (status, &other["messagesReceived"]),
        (200, &stats["messagesReceived"])
    );
    let (status, acme) = get(&gateway, "/acme/@stats", OPS_KEY).await;
    assert_eq!((status, &acme["messagesReceived"]), (200, &Value::from(0)));

    // Reading figures made no series that traffic did not: acme has had none.
    let metrics_after = gateway.metrics().await;
    assert!(
        !metrics_after.contains("wsgate_plugin_failures_total{tenant=\"acme\""),
        "a read created a failure series"
    );

    let (status, page) = get(&gateway, "/demo/@connections?route=/echo", "demo-key").await;
    assert_eq!(status, 200, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["identity"]["userAgent"], "stats-test/1.0", "{page}");
    assert_eq!(item["identity"]["sourceIp"], "127.0.0.1", "{page}");
    assert!(item["lastActiveAt"].as_str().unwrap() >= item["connectedAt"].as_str().unwrap());
}

/// The operator key acts as any tenant on the paths that name one (the console's
/// all-tenants view), and the tenant's audit trail says it was the operator; it names
/// no tenant on Yandex's API, and an unknown tenant is 404.
#[tokio::test]
async fn the_operator_key_acts_as_any_tenant_and_is_audited_as_such() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    let (status, _, body) = http(
        "POST",
        &url,
        &bearer(OPS_KEY),
        b"from the operator".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(recv_text(&mut client).await, "from the operator");

    let (status, log) = get(&gateway, "/demo/@logs", "demo-key").await;
    assert_eq!(status, 200, "{log}");
    let posted = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["audit"]["action"] == "PostToConnection")
        .unwrap_or_else(|| panic!("no audit entry: {log}"));
    let key_id = posted["audit"]["keyId"].as_str().unwrap();
    assert!(key_id.starts_with("operator bearer:"), "{posted}");
    assert!(!key_id.contains(OPS_KEY), "{posted}");

    let (status, body) = get(&gateway, "/nobody/@connections", OPS_KEY).await;
    assert_eq!(status, 404, "{body}");
    let yandex = format!(
        "http://{}/apigateways/websocket/v1/connections/{id}",
        gateway.admin
    );
    let (status, _, body) = http("GET", &yandex, &bearer(OPS_KEY), Vec::new()).await;
    assert_eq!(
        status, 403,
        "the operator names no tenant on Yandex's API: {body}"
    );
    drop(client);
}

/// `/-/status` is the operator's: tenants with their connections, the cluster (none
/// here) and the last reloads, refused ones with their reason.
#[tokio::test]
async fn status_lists_tenants_and_reloads_for_the_operator_only() {
    let gateway = Gateway::start(&standard_config()).await;
    let (status, body) = get(&gateway, "/-/status", "demo-key").await;
    assert_eq!(status, 403, "a tenant key: {body}");
    let _client = gateway.connect("/demo/echo").await;

    let reload = format!("http://{}/-/reload", gateway.admin);
    let (status, _, body) = http("POST", &reload, &bearer(OPS_KEY), Vec::new()).await;
    assert_eq!(status, 200, "{body}");
    std::fs::write(gateway.config_file(), "[listen]\nws = 12").unwrap();
    let (status, _, body) = http("POST", &reload, &bearer(OPS_KEY), Vec::new()).await;
    assert_eq!(status, 400, "{body}");

    let (status, node) = get(&gateway, "/-/status", OPS_KEY).await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["cluster"], Value::Null);
    assert_eq!(node["draining"], false);
    let demo = node["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "demo")
        .unwrap_or_else(|| panic!("{node}"));
    assert_eq!(demo["connections"], 1, "{node}");
    let reloads = node["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 2, "{node}");
    assert_eq!(reloads[0]["result"], "refused", "newest first: {node}");
    assert!(
        reloads[0]["error"]
            .as_str()
            .unwrap()
            .contains("wsgate.toml"),
        "{node}"
    );
    assert_eq!(reloads[1]["result"], "ok", "{node}");
    assert!(
        reloads[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("tenants +0 -0 ~0"),
        "{node}"
    );
}

/// `/-/me` is no oracle for the operator key: a source past its failure limit is
/// refused unchecked, the right key included, and wrong keys are charged.
#[tokio::test]
async fn me_is_under_the_failure_limit() {
    let config = standard_config().replacen(
        "[admin]\n",
        "[admin]\nauth_failure_burst = 3\nauth_failures_per_minute = 1\n",
        1,
    );
    let gateway = Gateway::start(&config).await;
    for attempt in 0..3 {
        let (status, body) = get(&gateway, "/-/me", &format!("guess-{attempt}")).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = get(&gateway, "/-/me", "guess-3").await;
    assert_eq!(status, 429, "past the burst: {body}");
    let (status, body) = get(&gateway, "/-/me", OPS_KEY).await;
    assert_eq!(status, 429, "the right key is not even checked now: {body}");
}

/// The operator key is charged like any key on a tenant's path when wrong, and it
/// is not held to the tenant's management API rate (the console polls).
#[tokio::test]
async fn the_operator_is_not_under_a_tenants_api_rate() {
    let gateway = Gateway::start(&standard_config()).await;
    // Tenant `rated` allows 1 request a second with a burst of 2.
    for _ in 0..2 {
        assert_eq!(get(&gateway, "/rated/@stats", "rated-key").await.0, 200);
    }
    assert_eq!(get(&gateway, "/rated/@stats", "rated-key").await.0, 429);
    for _ in 0..10 {
        let (status, body) = get(&gateway, "/rated/@connections", OPS_KEY).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = gateway.metrics().await;
    let (status, body) = get(&gateway, "/rated/@connections", "not-the-ops-key").await;
    assert_eq!(status, 403, "{body}");
    let unknown = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("wsgate_admin_auth_failures_total{reason=\"unknown_key\"} ")
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    assert_eq!(
        unknown(&gateway.metrics().await),
        unknown(&before) + 1,
        "a wrong key on a tenant's path is charged"
    );
}

/// `[admin] console_websocket_origin` names the WebSocket origin behind a proxy: Try-it
/// connects there and the policy allows it, whatever the Host.
#[tokio::test]
async fn a_configured_websocket_origin_is_what_try_it_uses() {
    let config = standard_config().replacen(
        "[admin]\n",
        "[admin]\nconsole_websocket_origin = \"wss://ws.example.com\"\n",
        1,
    );
    let gateway = Gateway::start(&config).await;
    let (status, stats) = get(&gateway, "/demo/@stats", "demo-key").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["websocket"], "wss://ws.example.com/demo");
    let page = reqwest::get(format!("http://{}/ui/", gateway.admin))
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("connect-src 'self' wss://ws.example.com;"),
        "{policy}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
}

/// `@logs?tail=N` reads the newest entries, for the console's log tail.
#[tokio::test]
async fn the_log_tail_is_the_newest_entries() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let url = format!("http://{}/demo/@connections/{id}", gateway.admin);
    for n in 0..5 {
        let (status, _, _) = http(
            "POST",
            &url,
            &bearer("demo-key"),
            format!("{n}").into_bytes(),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, page) = get(&gateway, "/demo/@logs?tail=2", "demo-key").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(page["next"], entries[1]["seq"], "{page}");
    assert_eq!(entries[1]["audit"]["action"], "PostToConnection", "{page}");
    let (status, body) = get(&gateway, "/demo/@logs?tail=2&since=1", "demo-key").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&gateway, "/demo/@logs?tail=0", "demo-key").await;
    assert_eq!(status, 400, "{body}");
}
