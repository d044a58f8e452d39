//! The example backend (examples/backend/server.py, boto3) behind the integration
//! plugin, wired as examples/wsgate.toml wires it: the whole loop of a client's message
//! going to the backend, and the backend reaching the other clients through the
//! gateway's management API, AWS's `@connections` (boto3) and Yandex's REST API.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{self, Gateway, WAIT, ask, expect_close, plugin, recv, recv_text};
use crate::plugins;

/// The example backend's Python process, killed when dropped.
struct ExampleBackend {
    /// Where it listens.
    port: u16,
    /// Its stderr so far (the `backend: …` lines and any traceback).
    log: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl ExampleBackend {
    /// Starts `server.py --port 0` with the project's Python (target/py, the one the
    /// aws_sdk tests use) and waits for its `listening backend=HOST:PORT` line.
    async fn start(management_url: &str) -> ExampleBackend {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join("target/py/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup.sh (scripts/test.sh does) to install boto3",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(root.join("examples/backend/server.py"))
            .args(["--port", "0", "--management-url", management_url])
            .args(["--key", "demo-key"])
            // The example's own credentials, whatever the machine has configured.
            .env("AWS_ACCESS_KEY_ID", "AKIDDEMO")
            .env("AWS_SECRET_ACCESS_KEY", "demo-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting examples/backend/server.py");

        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        // Importing boto3 and loading its service model takes a while.
        let port = tokio::time::timeout(WAIT * 3, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Some(addr) = line.strip_prefix("listening backend=") {
                    let addr: std::net::SocketAddr = addr.parse().unwrap();
                    return Some(addr.port());
                }
            }
            None
        })
        .await;
        let Ok(Some(port)) = port else {
            panic!(
                "the example backend did not start; its stderr:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        ExampleBackend {
            port,
            log,
            _child: child,
        }
    }

    /// Its stderr so far, for failure messages.
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Tenant `demo` as examples/wsgate.toml has it: the integration plugin as
/// `aws-integration` (with the authorizer), `yandex-integration` and
/// `west-integration`, all pointing at the example backend on `port`.
fn example_config(port: u16) -> String {
    let origin = format!("http://127.0.0.1:{port}");
    let mut tenants = String::new();
    for (name, config) in [
        (
            "aws-integration",
            format!(
                "url = \"{origin}/aws\", shape = \"aws\", authorizer_url = \"{origin}/authorize\""
            ),
        ),
        (
            "yandex-integration",
            format!("url = \"{origin}/yandex\", shape = \"yandex\""),
        ),
        (
            "west-integration",
            format!("url = \"{origin}/west\", shape = \"west\""),
        ),
    ] {
        tenants.push_str(&plugin(
            "demo",
            name,
            plugins::INTEGRATION,
            &format!("allowed_outbound_hosts = [{origin:?}]\nconfig = {{ {config} }}"),
        ));
    }
    tenants.push_str(
        r#"
[tenants.demo.credentials]
bearer_keys = ["demo-key"]
aws = [{ access_key_id = "AKIDDEMO", secret_access_key = "demo-secret" }]

[tenants.demo.routes."/aws"]
plugin = "aws-integration"
[tenants.demo.routes."/yandex"]
plugin = "yandex-integration"
[tenants.demo.routes."/west"]
plugin = "west-integration"
"#,
    );
    harness::config(&tenants)
}

/// A gateway in this process and the example backend, each knowing the other: the
/// backend needs the gateway's management URL and the gateway the backend's port, so
/// the gateway starts first and gets the routes to the backend in a second snapshot.
async fn example() -> (Gateway, ExampleBackend) {
    let gateway = Gateway::start(&example_config(1)).await;
    let backend = ExampleBackend::start(&format!("http://{}", gateway.admin)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = wsgate::Config::parse(
        &example_config(backend.port),
        &dir.path().join("wsgate.toml"),
        dir.path(),
    )
    .unwrap();
    let internals = gateway.internals();
    let snapshot = internals
        .build(&config)
        .unwrap_or_else(|e| panic!("the example config does not load: {e}"));
    internals.swap(snapshot);
    (gateway, backend)
}

/// /demo/aws: the authorizer lets `?token=let-me-in` in (401 without a token, 403
/// with another); a broadcast from one client reaches the other through boto3's
/// `post_to_connection`, and the sender is told how many it reached.
#[tokio::test]
async fn aws_route_broadcasts_through_boto3() {
    let (gateway, backend) = example().await;

    let (status, body) = gateway.refused(gateway.url("/demo/aws")).await;
    assert_eq!(status, 401, "{body}\nbackend:\n{}", backend.log());
    assert_eq!(body, r#"{"message":"Unauthorized"}"#);
    let (status, body) = gateway.refused(gateway.url("/demo/aws?token=wrong")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body, r#"{"message":"Forbidden"}"#);
    let (status, body) = gateway
        .refused(gateway.url("/demo/aws?token=let-me-in&refuse=1"))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (403, "refused by the backend (refuse=1)")
    );

    let mut sender = gateway.connect("/demo/aws?token=let-me-in").await;
    let mut other = gateway.connect("/demo/aws?token=let-me-in").await;
    assert_eq!(ask(&mut sender, "hello").await, "echo: hello");
    let answer = ask(&mut sender, r#"{"action":"broadcast","text":"hi"}"#).await;
    assert_eq!(answer, "sent to 1", "backend:\n{}", backend.log());
    assert_eq!(recv_text(&mut other).await, "hi");
    // And the other way round.
    let answer = ask(&mut other, r#"{"action":"broadcast","text":"hi back"}"#).await;
    assert_eq!(answer, "sent to 1", "backend:\n{}", backend.log());
    assert_eq!(recv_text(&mut sender).await, "hi back");

    // A binary message comes back as it came.
    sender.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    match recv(&mut sender).await {
        Message::Binary(bytes) => assert_eq!(bytes.to_vec(), [1u8, 2, 3]),
        other => panic!("expected the binary echo, got {other:?}"),
    }

    // The backend picks chat.v1 when it is offered.
    let mut request = gateway
        .url("/demo/aws?token=let-me-in")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (_chat, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade timed out")
        .expect("the upgrade with a subprotocol failed");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "chat.v1",
        "backend:\n{}",
        backend.log()
    );

    // The backend logged the authorizer's principal on the events.
    let log = backend.log();
    assert!(log.contains("authorize token=ok"), "{log}");
    assert!(log.contains("principal=demo-user"), "{log}");
}

/// /demo/yandex: the same broadcast through Yandex's REST API
/// (`connections/{id}:send` with the tenant's bearer key); /demo/west echoes and closes
/// on "bye".
#[tokio::test]
async fn yandex_route_broadcasts_through_the_rest_api_and_west_echoes() {
    let (gateway, backend) = example().await;

    let mut sender = gateway.connect("/demo/yandex").await;
    let mut other = gateway.connect("/demo/yandex").await;
    assert_eq!(ask(&mut sender, "hello").await, "echo: hello");
    let answer = ask(&mut sender, r#"{"action":"broadcast","text":"hi"}"#).await;
    assert_eq!(answer, "sent to 1", "backend:\n{}", backend.log());
    assert_eq!(recv_text(&mut other).await, "hi");
    sender.send(Message::binary(vec![0u8, 255])).await.unwrap();
    match recv(&mut sender).await {
        Message::Binary(bytes) => assert_eq!(bytes.to_vec(), [0u8, 255]),
        other => panic!("expected the binary echo, got {other:?}"),
    }

    let mut west = gateway.connect("/demo/west").await;
    assert_eq!(ask(&mut west, "hello").await, "echo: hello");
    west.send(Message::text("bye")).await.unwrap();
    let close = expect_close(&mut west).await;
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), "bye");
}
