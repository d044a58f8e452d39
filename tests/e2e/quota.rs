//! A tenant's plugins share caps on instances in use and on memory: a plugin that grows
//! every instance cannot take the gateway's memory, other tenants keep serving, and every
//! event answers or fails within its time limit, however long it waited for a place.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Gateway, ask, config, plugin, recv_text};
use crate::plugins;

/// Clients of the memory-hungry tenant, all sending at once.
const CLIENTS: usize = 100;

/// The attack an adversarial review ran: events that each hold 14 MiB and compute for a
/// while, from many clients at once. Before the caps, every waiting event kept an
/// instance: the gateway grew by 14 MiB per client (1.4 GiB here), the pool kept
/// instances at their grown size, and answers took seconds against a 100 ms limit.
#[tokio::test]
async fn a_tenant_cannot_grow_past_its_memory_budget_and_events_keep_their_deadline() {
    let mut text = plugin(
        "hog",
        "hostile",
        plugins::HOSTILE,
        "limits = { memory_bytes = 16777216 }",
    );
    text.push_str(&plugin("demo", "echo", plugins::ECHO, ""));
    text.push_str(
        r#"
[tenants.hog.limits]
memory_bytes = 67108864
[tenants.hog.routes."/grow"]
plugin = "hostile"
[tenants.demo.routes."/echo"]
plugin = "echo"
"#,
    );
    let gateway = Gateway::start_binary(&config(&text)).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(gateway.connect("/hog/grow").await);
    }
    let mut neighbour = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut neighbour, "warm").await, "warm");
    let before = gateway.rss_kib();

    let sent = Instant::now();
    for client in &mut clients {
        client.send(Message::text("grow 14 20")).await.unwrap();
    }
    let attack = async {
        let mut answers = Vec::new();
        for client in &mut clients {
            let reply = recv_text(client).await;
            answers.push((reply, sent.elapsed()));
        }
        answers
    };
    let neighbour_check = async {
        let started = Instant::now();
        let echoed = ask(&mut neighbour, "still here").await;
        (echoed, started.elapsed())
    };
    // The gateway's resident memory, sampled while the attack runs.
    let done = std::sync::atomic::AtomicBool::new(false);
    let sampler = async {
        let mut peak = gateway.rss_kib();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(gateway.rss_kib());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        peak
    };
    let attack = async {
        let answers = attack.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    };
    let (answers, (echoed, neighbour_took), peak) = tokio::join!(attack, neighbour_check, sampler);

    assert_eq!(echoed, "still here");
    assert!(
        neighbour_took < Duration::from_secs(1),
        "another tenant's echo took {neighbour_took:?} during the attack"
    );
    let grown = answers.iter().filter(|(r, _)| r == "grown").count();
    let failed = answers
        .iter()
        .filter(|(r, _)| r.contains("Internal server error"))
        .count();
    assert_eq!(
        grown + failed,
        CLIENTS,
        "every event answers or fails: {answers:?}"
    );
    assert!(grown >= 1, "some events fit the budget: {answers:?}");
    // 100 ms of time limit, plus scheduling on a shared 2-core machine: an event that
    // waited seconds for a place would show here.
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "quota: {grown} grown, {failed} failed, slowest {slowest:?}, peak growth {} MiB, neighbour {neighbour_took:?}",
        peak.saturating_sub(before) / 1024
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest answer took {slowest:?} against a 100 ms limit"
    );
    // The budget is 64 MiB; 100 unbounded instances would be 1.4 GiB.
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64 + 64,
        "the gateway grew by {growth_mib} MiB under a 64 MiB tenant budget"
    );
    // Grown instances are not kept warm: what the attack grew is given back.
    let after = gateway.rss_kib();
    assert!(
        after.saturating_sub(before) / 1024 < 32,
        "the gateway kept {} MiB after the attack",
        after.saturating_sub(before) / 1024
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"wsgate_plugin_failures_total{tenant="hog",plugin="hostile",kind="#),
        "{metrics}"
    );
}
