//! The management API driven by real AWS clients: boto3's `apigatewaymanagementapi`
//! and the AWS CLI, signing with SigV4 (installed by scripts/setup.sh under target/py).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::{Client, Gateway, WAIT, expect_close, own_id, recv_text};
use crate::standard_config;

/// A program of the Python virtual environment scripts/setup-py.sh makes.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/py/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (scripts/test.sh does) to install boto3 and awscli",
        path.display()
    );
    path
}

async fn run(command: &mut Command) -> String {
    let output = tokio::time::timeout(WAIT * 3, command.stdin(Stdio::null()).output())
        .await
        .expect("the AWS client did not finish")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the AWS client failed:\n{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// boto3 posts, gets, deletes, and raises GoneException, PayloadTooLargeException and
/// ForbiddenException by name.
#[tokio::test]
async fn boto3_drives_the_connections_api() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    boto3_drives(&format!("http://{}/demo", gateway.admin), &mut client, &id).await;
}

/// Runs tests/e2e/aws_sdk.py (boto3) against the management `endpoint` for connection
/// `id`, whose client is `client`, and checks each step: the post arrives, the
/// description, the named exceptions, and the close.
pub async fn boto3_drives(endpoint: &str, client: &mut Client, id: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/aws_sdk.py");
    let out = run(Command::new(venv_bin("python"))
        .arg(script)
        .arg(endpoint)
        .arg(id))
    .await;
    let results: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    assert_eq!(recv_text(client).await, "from boto3");
    assert_eq!(results["source_ip"], "127.0.0.1", "{results}");
    assert!(
        results["connected_at"].as_str().unwrap().starts_with("20"),
        "{results}"
    );
    for flag in [
        "gone",
        "too_large",
        "wrong_secret_forbidden",
        "other_tenant_forbidden",
        "gone_after_delete",
    ] {
        assert_eq!(results[flag], true, "{flag}: {results}");
    }
    assert_eq!(u16::from(expect_close(client).await.code), 1000);
}

/// The AWS CLI's `apigatewaymanagementapi post-to-connection` reaches the client.
#[tokio::test]
async fn aws_cli_posts_to_a_connection() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    run(Command::new(venv_bin("aws"))
        .args([
            "apigatewaymanagementapi",
            "post-to-connection",
            "--endpoint-url",
        ])
        .arg(format!("http://{}/demo", gateway.admin))
        .args(["--connection-id", &id, "--data", "hello from the aws cli"])
        .env("AWS_ACCESS_KEY_ID", "AKIDDEMO")
        .env("AWS_SECRET_ACCESS_KEY", "demo-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"))
    .await;
    assert_eq!(recv_text(&mut client).await, "hello from the aws cli");
}
