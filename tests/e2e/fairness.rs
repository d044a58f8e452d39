//! Tenant quotas (issue 14): past `tenant_message_rate` a tenant's readers slow down,
//! across all of its connections, and nothing is dropped; other tenants are served
//! meanwhile.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, ask, config, plugin, recv_text};
use crate::plugins;

#[tokio::test]
async fn a_tenant_past_its_message_quota_is_slowed_not_dropped_and_others_are_served() {
    let mut tenants = plugin("capped", "echo", plugins::ECHO, "");
    tenants.push_str(
        "[tenants.capped.limits]\ntenant_message_rate = 50\ntenant_message_burst = 10\n\
         [tenants.capped.routes.\"/echo\"]\nplugin = \"echo\"\n",
    );
    tenants.push_str(&plugin("free", "echo", plugins::ECHO, ""));
    tenants.push_str("[tenants.free.routes.\"/echo\"]\nplugin = \"echo\"\n");
    let gateway = Gateway::start_binary(&config(&tenants)).await;

    let mut capped = Vec::new();
    for _ in 0..4 {
        capped.push(gateway.connect("/capped/echo").await);
    }
    let started = Instant::now();
    // 80 messages across 4 connections, all sent at once: 10 pass on the burst, the
    // other 70 at 50 a second.
    for (c, client) in capped.iter_mut().enumerate() {
        for n in 0..20 {
            client
                .feed(Message::text(format!("{c}-{n}")))
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
    }
    // Another tenant is served while the capped one waits on its quota.
    let mut free = gateway.connect("/free/echo").await;
    assert_eq!(ask(&mut free, "not held back").await, "not held back");
    for (c, client) in capped.iter_mut().enumerate() {
        for n in 0..20 {
            // Every message comes back, in order: slowed, not dropped (no error frame).
            assert_eq!(recv_text(client).await, format!("{c}-{n}"));
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "80 messages passed a quota of 50/s (burst 10) in {took:?}"
    );
}
