//! Out of file descriptors, the gateway keeps serving: the listener sheds new clients
//! through a spare descriptor instead of spinning on `accept`, its warning is sampled,
//! and once descriptors free up it accepts again.

use std::time::Duration;

use crate::harness::{Gateway, ask, config, plugin};
use crate::plugins;

/// The attack an adversarial review ran: a few hundred idle connections exhausted the
/// descriptors, the listener stopped accepting and the log took 820 warnings.
#[tokio::test]
async fn out_of_descriptors_the_gateway_sheds_and_recovers() {
    let mut text = plugin("demo", "echo", plugins::ECHO, "");
    text.push_str("[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n");
    // The cap is above what the descriptors allow, so descriptors run out first.
    let text = config(&text).replacen(
        "[tenants",
        "[limits]\nhandshake_timeout = \"60s\"\n\n[tenants",
        1,
    );
    let gateway = Gateway::start_binary_with_open_files(&text, Some(96)).await;
    let mut working = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut working, "before").await, "before");

    // Silent sockets until the gateway can take no more.
    let mut hogs = Vec::new();
    for _ in 0..200 {
        hogs.push(tokio::net::TcpStream::connect(gateway.ws).await.unwrap());
    }
    let warning = gateway
        .logs
        .wait_for("about failed accepts", |l| l.contains("accept failed"))
        .await;
    assert!(warning.contains("Too many open files"), "{warning}");
    // The open connection is still served meanwhile.
    assert_eq!(ask(&mut working, "during").await, "during");
    // A shed client is closed at once, not left waiting in the backlog.
    let mut shed = tokio::net::TcpStream::connect(gateway.ws).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut shed, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the shed client was answered: {read:?}"
    );

    drop(hogs);
    let mut recovered = None;
    for _ in 0..500 {
        if let Ok((client, _)) = tokio_tungstenite::connect_async(gateway.url("/demo/echo")).await {
            recovered = Some(client);
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut recovered = recovered.expect("the listener never accepted again");
    assert_eq!(ask(&mut recovered, "after").await, "after");
    // Sampled: at most one warning a second, however many accepts failed.
    let warnings = gateway.logs.count(|l| l.contains("accept failed"));
    assert!(warnings <= 15, "{warnings} accept warnings");
}
