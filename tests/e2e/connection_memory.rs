//! What a connection keeps in memory after its traffic: a large message's buffers are
//! given back once it is done, so an idle connection costs the same whatever it carried.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, config, plugin};
use crate::plugins;

/// Connections measured at once: enough that the per-connection figure is not noise.
const CONNECTIONS: usize = 200;

/// The largest message the default limits allow.
const MAX_MESSAGE: usize = 128 * 1024;

/// The attack an adversarial review ran: each connection echoes one maximum-size
/// message and idles. tungstenite kept its read and write buffers at that size, 265 KiB
/// per connection more than a fresh one (`wsgate-bench idle --message-bytes 131072`).
#[tokio::test]
async fn a_large_message_leaves_no_buffer_behind() {
    let mut text = plugin("demo", "echo", plugins::ECHO, "");
    text.push_str("[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n");
    let gateway = Gateway::start_binary(&config(&text)).await;
    // One connection and one large echo first, so that what the gateway sets up once
    // (a warm instance, allocator arenas) is not charged to the measured ones.
    let mut warm = gateway.connect("/demo/echo").await;
    echo(&mut warm, MAX_MESSAGE).await;

    let before = gateway.rss_kib();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(gateway.connect("/demo/echo").await);
    }
    let fresh = gateway.rss_kib().saturating_sub(before);
    for client in &mut clients {
        echo(client, MAX_MESSAGE).await;
    }
    let after = gateway.rss_kib().saturating_sub(before);
    let per_fresh = fresh as f64 / CONNECTIONS as f64;
    let per_after = after as f64 / CONNECTIONS as f64;
    // The 128 KiB the buffers would keep dwarfs any allocator noise: a connection that
    // kept either buffer would cost more than 64 KiB over its fresh figure.
    assert!(
        per_after < per_fresh + 32.0,
        "after one {MAX_MESSAGE}-byte echo a connection costs {per_after:.1} KiB, \
         fresh {per_fresh:.1} KiB"
    );
    // And the connections still work, with large and small messages.
    for client in clients.iter_mut().take(10) {
        echo(client, MAX_MESSAGE).await;
        echo(client, 10).await;
    }
}

/// Sends a binary message of `size` bytes and waits for its echo.
async fn echo(client: &mut crate::harness::Client, size: usize) {
    let sent = vec![0xA5u8; size];
    client.send(Message::binary(sent.clone())).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
        .await
        .expect("an echo within 10 s")
        .expect("the connection is open")
        .expect("a valid message");
    assert!(
        reply.is_binary() && reply.len() == size,
        "expected a {size}-byte binary echo, got {} bytes",
        reply.len()
    );
}

/// The attack an adversarial review ran: upgrade heads near the 16 KiB limit made each
/// idle connection keep its whole head (12.3 KiB against 4.5). A connection now keeps
/// at most 4 KiB of headers after `$connect`.
#[tokio::test]
async fn a_large_upgrade_head_is_not_kept_for_the_connections_life() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut text = plugin("demo", "echo", plugins::ECHO, "");
    text.push_str("[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n");
    let gateway = Gateway::start_binary(&config(&text)).await;
    let mut warm = gateway.connect("/demo/echo").await;
    echo(&mut warm, 10).await;

    // Fresh connections with small heads, then as many with 14 KB heads.
    let before = gateway.rss_kib();
    let mut small = Vec::new();
    for _ in 0..CONNECTIONS {
        small.push(gateway.connect("/demo/echo").await);
    }
    let middle = gateway.rss_kib();
    let mut large = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut request = gateway.url("/demo/echo").into_client_request().unwrap();
        for i in 0..20 {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-filler-{i:02}").as_bytes()).unwrap(),
                http::HeaderValue::from_str(&"v".repeat(700)).unwrap(),
            );
        }
        let (client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        large.push(client);
    }
    let after = gateway.rss_kib();
    let per_small = middle.saturating_sub(before) as f64 / CONNECTIONS as f64;
    let per_large = after.saturating_sub(middle) as f64 / CONNECTIONS as f64;
    assert!(
        per_large < per_small + 8.0,
        "a connection with a 14 KB head costs {per_large:.1} KiB, with a small one \
         {per_small:.1} KiB"
    );
    echo(&mut large[0], 10).await;
}
