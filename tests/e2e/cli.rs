//! `wsgate connections list|get|send|disconnect` against the real gateway, with a bearer
//! key and with AWS credentials from the environment.

use std::process::Stdio;

use tokio::process::Command;

use crate::harness::{BIN, Gateway, expect_close, own_id, recv_text};
use crate::standard_config;

/// Runs the CLI; returns exit code, stdout, stderr.
async fn cli(gateway: &Gateway, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .arg("connections")
        .args(args)
        .args([
            "--endpoint",
            &format!("http://{}", gateway.admin),
            "--tenant",
            "demo",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("WSGATE_KEY")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(crate::harness::WAIT, command.output())
        .await
        .expect("the CLI did not finish")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The tutorial flow: list, get, send, disconnect; errors exit non-zero with the API's.
#[tokio::test]
async fn cli_manages_connections() {
    let gateway = Gateway::start(&standard_config()).await;
    let mut client = gateway.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let key = ["--key", "demo-key"];

    let (code, out, err) = cli(&gateway, &["list", key[0], key[1]], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("1 connection(s)"),
        "{out}"
    );

    let (code, out, err) = cli(&gateway, &["get", &id, key[0], key[1]], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("id: {id}")) && out.contains("source_ip: 127.0.0.1"),
        "{out}"
    );
    let (_, out, _) = cli(&gateway, &["get", &id, key[0], key[1], "--json"], &[]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["connectionId"],
        id.as_str()
    );

    let (code, out, err) = cli(
        &gateway,
        &["send", &id, "--data", "Hello!", key[0], key[1]],
        &[],
    )
    .await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("sent 6 bytes to {id}").as_str()),
        "{err}"
    );
    assert_eq!(recv_text(&mut client).await, "Hello!");

    // AWS credentials from the environment sign with SigV4.
    let aws = [
        ("AWS_ACCESS_KEY_ID", "AKIDDEMO"),
        ("AWS_SECRET_ACCESS_KEY", "demo-secret"),
    ];
    let (code, _, err) = cli(&gateway, &["send", &id, "--data", "signed"], &aws).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(recv_text(&mut client).await, "signed");

    let (code, _, err) = cli(
        &gateway,
        &[
            "disconnect",
            &id,
            "--code",
            "4001",
            "--reason",
            "bye",
            key[0],
            key[1],
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let frame = expect_close(&mut client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "bye")
    );

    let (code, _, err) = cli(
        &gateway,
        &["send", &id, "--data", "late", key[0], key[1]],
        &[],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("410 GoneException"), "{err}");
    // One id in 64 starts with `-` (URL-safe base64): it is an id, never a flag.
    for verb in ["get", "disconnect"] {
        let (code, _, err) = cli(
            &gateway,
            &[verb, "-x3vmQoTQW6ZKbP0YyQx_g", key[0], key[1]],
            &[],
        )
        .await;
        assert_ne!(code, 0);
        assert!(err.contains("410 GoneException"), "{verb}: {err}");
    }
    let (code, _, err) = cli(&gateway, &["list", "--key", "wrong"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("403 ForbiddenException"), "{err}");
    let (code, _, err) = cli(&gateway, &["list"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no credentials"), "{err}");
}

/// A key given with `--key` shows in `ps` to every user of the machine: the CLI warns
/// on stderr and names WSGATE_KEY, which it reads without a warning. It used to take
/// the key silently.
#[tokio::test]
async fn cli_warns_about_a_key_on_the_command_line() {
    let gateway = Gateway::start(&standard_config()).await;
    let (code, out, err) = cli(&gateway, &["list", "--key", "demo-key"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 connection(s)"), "{out}");
    assert!(
        err.contains("warning: --key") && err.contains("`ps`") && err.contains("WSGATE_KEY"),
        "{err}"
    );
    let (code, out, err) = cli(&gateway, &["list"], &[("WSGATE_KEY", "demo-key")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 connection(s)"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}
