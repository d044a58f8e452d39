//! Each tenant's execution log through the real binary: its plugins' log lines and
//! failures and its management API audit trail at `GET /{tenant}/@logs`, read, followed
//! as server-sent events, and printed by `wsgate logs`; never another tenant's.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::{BIN, Gateway, WAIT, ask, http, own_id, recv_json, send_text};
use crate::standard_config;
use wsgate::client::{Client, Credentials, EventParser, ServerEvent};

/// A bearer `Authorization` header.
fn bearer(key: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {key}"))]
}

/// `GET /{tenant}/@logs{query}` with `key`: status, error type, body as JSON.
async fn read(
    gateway: &Gateway,
    tenant: &str,
    key: &str,
    query: &str,
) -> (u16, Option<String>, Value) {
    let url = format!("http://{}/{tenant}/@logs{query}", gateway.admin);
    let (status, kind, body) = http("GET", &url, &bearer(key), Vec::new()).await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, kind, body)
}

/// The entries of tenant `tenant`'s log (read with `key`) of `kind`.
async fn entries(gateway: &Gateway, tenant: &str, key: &str, kind: &str) -> Vec<Value> {
    let (status, _, page) = read(gateway, tenant, key, "").await;
    assert_eq!(status, 200, "{page}");
    let all = page["entries"].as_array().expect("entries").clone();
    all.into_iter().filter(|e| e["kind"] == kind).collect()
}

/// A followed log: the response being streamed and its events so far.
struct Follower {
    response: reqwest::Response,
    parser: EventParser,
    events: std::collections::VecDeque<ServerEvent>,
}

impl Follower {
    /// Follows `tenant`'s log with `key` and extra `headers`; the response as it came.
    async fn start(
        gateway: &Gateway,
        tenant: &str,
        key: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = format!("http://{}/{tenant}/@logs?follow=1{query}", gateway.admin);
        let mut request = reqwest::Client::new()
            .get(url)
            .header("authorization", format!("Bearer {key}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        tokio::time::timeout(WAIT, request.send())
            .await
            .expect("no answer to follow within the wait")
            .unwrap()
    }

    /// Follows `tenant`'s log, which must be accepted as an event stream.
    async fn open(
        gateway: &Gateway,
        tenant: &str,
        key: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Follower {
        let response = Follower::start(gateway, tenant, key, query, headers).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Follower {
            response,
            parser: EventParser::default(),
            events: Default::default(),
        }
    }

    /// The next event, waiting for it; `None` when the stream ended.
    async fn next(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("no event within the wait");
            match chunk {
                Ok(Some(chunk)) => self.events.extend(self.parser.push(&chunk).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next entry, skipping other events.
    async fn next_entry(&mut self) -> Value {
        loop {
            let event = self.next().await.expect("the stream ended");
            if event.event.is_none() {
                let entry: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.id.as_deref(), Some(entry["seq"].to_string().as_str()));
                return entry;
            }
        }
    }
}

/// A plugin's log line is kept in its own tenant's log, with level, plugin, route and
/// connection, and in no other tenant's; a tenant reads only its own log; `next` pages
/// on; a page is capped; reading the log is not itself audited.
#[tokio::test]
async fn a_plugin_line_reaches_its_own_tenant_only() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut demo = gateway.connect("/demo/probe").await;
    assert_eq!(ask(&mut demo, "log hello from demo").await, "ok");
    let id = ask(&mut demo, "list").await;
    let mut acme = gateway.connect("/acme/probe").await;
    assert_eq!(ask(&mut acme, "log hello from acme").await, "ok");

    let (status, _, page) = read(&gateway, "demo", "demo-key", "").await;
    assert_eq!(status, 200, "{page}");
    let lines = page["entries"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{page}");
    let line = &lines[0];
    assert_eq!(line["seq"], 1);
    assert_eq!(line["kind"], "log");
    assert_eq!(line["level"], "info");
    assert_eq!(line["plugin"], "probe");
    assert_eq!(line["route"], "/probe");
    assert_eq!(line["connectionId"], id.as_str());
    assert_eq!(line["message"], "hello from demo");
    let time = line["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert_eq!(
        (page["next"].as_u64(), page["dropped"].as_u64()),
        (Some(1), Some(0))
    );

    let acme_lines = entries(&gateway, "acme", "acme-key", "log").await;
    let messages: Vec<&Value> = acme_lines.iter().map(|e| &e["message"]).collect();
    assert_eq!(messages, ["hello from acme"]);

    // Another tenant's key reads nothing of it, nor does no key.
    let (status, kind, _) = read(&gateway, "acme", "demo-key", "").await;
    assert_eq!((status, kind.as_deref()), (403, Some("ForbiddenException")));
    let url = format!("http://{}/demo/@logs", gateway.admin);
    assert_eq!(http("GET", &url, &[], Vec::new()).await.0, 403);

    let (_, _, after) = read(&gateway, "demo", "demo-key", "?since=1").await;
    assert_eq!(after["entries"], serde_json::json!([]), "{after}");
    assert_eq!(after["next"], 1);
    let (status, kind, _) = read(&gateway, "demo", "demo-key", "?limit=1001").await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("BadRequestException"))
    );
    assert!(
        entries(&gateway, "demo", "demo-key", "audit")
            .await
            .is_empty()
    );
}

/// A failed event is kept with its cause, the plugin, the route and the connection.
#[tokio::test]
async fn a_failure_is_kept() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut client = gateway.connect("/demo/panic").await;
    send_text(&mut client, "panic").await;
    let frame = recv_json(&mut client).await;
    assert_eq!(frame["message"], "Internal server error", "{frame}");
    let failures = entries(&gateway, "demo", "demo-key", "failure").await;
    let [failure] = failures.as_slice() else {
        panic!("one failure expected: {failures:?}");
    };
    assert_eq!(failure["level"], "error");
    assert_eq!(failure["plugin"], "panic");
    assert_eq!(failure["route"], "/panic");
    assert_eq!(failure["connectionId"], frame["connectionId"]);
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("(trap)") && message.contains("asked to panic in on_message"),
        "{message}"
    );
    assert!(
        entries(&gateway, "acme", "acme-key", "failure")
            .await
            .is_empty()
    );
}

/// Management calls are kept in the caller's tenant's log with the key id (an access
/// key id, or a hash prefix of a bearer key, never the key), the source, the action,
/// the target and the status, failures included; refused credentials add nothing.
#[tokio::test]
async fn management_calls_are_audited() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let admin = format!("http://{}", gateway.admin);
    let post = |target: &str| format!("{admin}/demo/@connections/{target}");
    assert_eq!(
        http("POST", &post(&id), &bearer("demo-key"), b"hi".to_vec())
            .await
            .0,
        200
    );
    assert_eq!(
        http("POST", &post("gone"), &bearer("demo-key"), b"hi".to_vec())
            .await
            .0,
        410
    );
    assert_eq!(
        http("POST", &post(&id), &bearer("wrong-key"), b"hi".to_vec())
            .await
            .0,
        403
    );
    let signed = Client::new(
        &format!("{admin}/demo"),
        Credentials::Aws {
            access_key_id: "AKIDDEMO".into(),
            secret_access_key: "demo-secret".into(),
            session_token: None,
            region: "us-east-1".into(),
        },
    );
    signed
        .call(
            reqwest::Method::GET,
            &Client::connection_path(&id),
            Vec::new(),
        )
        .await
        .unwrap();
    // Listing is not audited: dashboards and the console poll it.
    let list = format!("{admin}/demo/@connections");
    assert_eq!(
        http("GET", &list, &bearer("demo-key"), Vec::new()).await.0,
        200
    );
    let yandex = format!("{admin}/apigateways/websocket/v1/connections/{id}");
    assert_eq!(
        http("GET", &yandex, &bearer("demo-key"), Vec::new())
            .await
            .0,
        200
    );

    let audit = entries(&gateway, "demo", "demo-key", "audit").await;
    let seen: Vec<(&str, &str, u64)> = audit
        .iter()
        .map(|e| {
            let a = &e["audit"];
            (
                a["action"].as_str().unwrap(),
                a["target"].as_str().unwrap(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PostToConnection", id.as_str(), 200),
            ("PostToConnection", "gone", 410),
            ("GetConnection", id.as_str(), 200),
            ("ConnectionService.Get", id.as_str(), 200),
        ]
    );
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(b"demo-key");
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let bearer_id = format!("bearer:{hex}");
    assert_eq!(audit[0]["audit"]["keyId"], bearer_id.as_str());
    assert_eq!(audit[2]["audit"]["keyId"], "AKIDDEMO");
    assert_eq!(audit[0]["audit"]["sourceIp"], "127.0.0.1");
    assert_eq!(
        (audit[0]["level"].as_str(), audit[1]["level"].as_str()),
        (Some("info"), Some("warn"))
    );
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains("demo-key") && !text.contains("demo-secret"),
        "{text}"
    );
    assert!(
        entries(&gateway, "acme", "acme-key", "audit")
            .await
            .is_empty()
    );
}

/// A follower gets the entries after `since`, then one logged after it started; a
/// reconnecting follower resumes after its `Last-Event-ID`; a tenant's follower never
/// gets another tenant's entries.
#[tokio::test]
async fn a_follower_gets_new_entries() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut demo = gateway.connect("/demo/probe").await;
    assert_eq!(ask(&mut demo, "log before").await, "ok");
    let mut follower = Follower::open(&gateway, "demo", "demo-key", "", &[]).await;
    let mut acme_follower = Follower::open(&gateway, "acme", "acme-key", "", &[]).await;
    assert_eq!(follower.next_entry().await["message"], "before");
    assert_eq!(ask(&mut demo, "log after").await, "ok");
    let mut acme = gateway.connect("/acme/probe").await;
    assert_eq!(ask(&mut acme, "log acme only").await, "ok");
    let after = follower.next_entry().await;
    assert_eq!(
        (after["seq"].as_u64(), after["message"].as_str()),
        (Some(2), Some("after"))
    );
    assert_eq!(acme_follower.next_entry().await["message"], "acme only");

    let mut resumed = Follower::open(
        &gateway,
        "demo",
        "demo-key",
        "&since=0",
        &[("last-event-id", "1")],
    )
    .await;
    assert_eq!(resumed.next_entry().await["message"], "after");
    assert_eq!(ask(&mut demo, "log third").await, "ok");
    assert_eq!(follower.next_entry().await["message"], "third");
    assert_eq!(resumed.next_entry().await["message"], "third");
}

/// Past eight followers a tenant's ninth is refused with 429 (another tenant's is
/// not); at shutdown every follower's stream ends and the gateway exits.
#[tokio::test]
async fn followers_are_capped_and_end_at_shutdown() {
    let mut gateway = Gateway::start_binary(&standard_config()).await;
    let mut followers = Vec::new();
    for _ in 0..8 {
        followers.push(Follower::open(&gateway, "demo", "demo-key", "", &[]).await);
    }
    let refused = Follower::start(&gateway, "demo", "demo-key", "", &[]).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["x-amzn-errortype"].to_str().unwrap(),
        "LimitExceededException"
    );
    let message = refused.text().await.unwrap();
    assert!(message.contains("8 followers"), "{message}");
    followers.push(Follower::open(&gateway, "acme", "acme-key", "", &[]).await);

    let status = gateway.signal(libc::SIGTERM).await;
    assert!(status.success(), "{status:?}");
    for follower in &mut followers {
        while let Some(event) = follower.next().await {
            assert!(event.event.is_none(), "{event:?}");
        }
    }
}

/// Runs `wsgate logs --tenant demo` with `args` and the bearer key in WSGATE_KEY.
fn logs_command(gateway: &Gateway, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("logs")
        .args([
            "--endpoint",
            &format!("http://{}", gateway.admin),
            "--tenant",
            "demo",
        ])
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("WSGATE_KEY", "demo-key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `wsgate logs` to its end: exit code, stdout, stderr.
async fn logs_cli(gateway: &Gateway, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(WAIT, logs_command(gateway, args).output())
        .await
        .expect("wsgate logs did not finish")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `wsgate logs` prints one line per entry (time, level, kind, plugin, route,
/// connection, message), or JSON lines; `--since` and `--limit` select; `--follow`
/// prints an entry logged after it started.
#[tokio::test]
async fn the_cli_prints_entries() {
    let gateway = Gateway::start_binary(&standard_config()).await;
    let mut demo = gateway.connect("/demo/probe").await;
    assert_eq!(ask(&mut demo, "log first line").await, "ok");
    let id = ask(&mut demo, "list").await;
    assert_eq!(ask(&mut demo, "log second line").await, "ok");

    let (code, out, err) = logs_cli(&gateway, &[]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        fields[1..],
        [
            "info",
            "log",
            "probe",
            "/probe",
            id.as_str(),
            "first",
            "line"
        ],
        "{out}"
    );
    assert!(fields[0].ends_with('Z'), "{out}");

    let (code, out, err) = logs_cli(&gateway, &["--json", "--since", "1"]).await;
    assert_eq!(code, 0, "{err}");
    let entry: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (entry["seq"].as_u64(), entry["message"].as_str()),
        (Some(2), Some("second line"))
    );
    let (_, out, _) = logs_cli(&gateway, &["--limit", "1"]).await;
    assert!(
        out.trim().ends_with("first line") && out.lines().count() == 1,
        "{out}"
    );

    // Follows from after the entries so far; the third line is logged once it runs,
    // and with --limit 1 it exits after printing it.
    let follow = logs_command(&gateway, &["--follow", "--since", "2", "--limit", "1"])
        .spawn()
        .unwrap();
    assert_eq!(ask(&mut demo, "log third line").await, "ok");
    let output = tokio::time::timeout(WAIT, follow.wait_with_output())
        .await
        .expect("wsgate logs --follow did not print the new entry")
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{err}");
    assert!(
        out.trim().ends_with("third line") && out.lines().count() == 1,
        "{out}"
    );

    let (code, _, err) = logs_cli(&gateway, &["--key", "wrong"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("403 ForbiddenException"), "{err}");
}
