//! Closed-loop echo load: every connection sends, waits for the echo, and repeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::report::{Report, collect, histogram};

/// Prints the number of operations done so far, once a second, to stderr.
pub fn progress(
    done: Arc<AtomicU64>,
    unit: &'static str,
    until: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while Instant::now() < until {
            tick.tick().await;
            eprintln!(
                "  {:>4.0}s  {} {unit}",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed)
            );
        }
    })
}

/// What each connection sends.
pub struct Shape {
    /// Bytes of `x` per message, unless `payload` is set.
    pub size: usize,
    /// A fixed text to send instead (e.g. a command for a testing plugin).
    pub payload: Option<String>,
    /// Total messages per second over all connections; closed loop when unset. Each
    /// connection sends on its own schedule and latency counts from the scheduled
    /// time, so a stall is not hidden by sending less (no coordinated omission).
    pub rate: Option<f64>,
    /// Count a reply other than the message sent as an error rather than a round trip
    /// (for servers that could answer with something else, e.g. an error frame).
    pub expect_echo: bool,
}

/// Runs the load and reports.
pub async fn run(common: &Common, shape: &Shape) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(common.connections);
    for _ in 0..common.connections {
        let (client, _) = tokio_tungstenite::connect_async(&common.url)
            .await
            .with_context(|| format!("connecting to {}", common.url))?;
        clients.push(client);
    }
    let warm_until = Instant::now() + Duration::from_secs_f64(common.warmup);
    let end = warm_until + Duration::from_secs_f64(common.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(done.clone(), "msgs", end);
    let payload = shape
        .payload
        .clone()
        .unwrap_or_else(|| "x".repeat(shape.size));
    let size = payload.len();
    let interval = shape
        .rate
        .map(|rate| Duration::from_secs_f64(common.connections as f64 / rate));
    let connections = clients.len();
    let expect_echo = shape.expect_echo;
    // The first unexpected reply is shown, once: it usually says what went wrong.
    let shown = Arc::new(std::sync::Once::new());
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let payload = payload.clone();
            let done = done.clone();
            let shown = shown.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut count, mut errors) = (0u64, 0u64);
                // Spread the connections' schedules over one interval.
                let mut next = interval
                    .map(|every| Instant::now() + every.mul_f64(i as f64 / connections as f64));
                loop {
                    let sent = match (next.as_mut(), interval) {
                        (Some(next), Some(every)) => {
                            tokio::time::sleep_until((*next).into()).await;
                            let scheduled = *next;
                            *next += every;
                            scheduled
                        }
                        _ => Instant::now(),
                    };
                    if sent >= end {
                        break;
                    }
                    if client.send(Message::text(payload.clone())).await.is_err() {
                        errors += 1;
                        break;
                    }
                    match client.next().await {
                        Some(Ok(Message::Text(reply)))
                            if expect_echo && reply.as_str() != payload =>
                        {
                            shown.call_once(|| {
                                eprintln!("load: expected the echo, got {:.200}", reply.as_str());
                            });
                            errors += 1;
                        }
                        Some(Ok(Message::Binary(reply))) if expect_echo => {
                            shown.call_once(|| {
                                eprintln!(
                                    "load: expected the echo, got {} binary bytes",
                                    reply.len()
                                );
                            });
                            errors += 1;
                        }
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if sent >= warm_until {
                                count += 1;
                                let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (count, errors, latency)
            })
        })
        .collect();
    let report = collect(tasks, "msgs", common, warm_until.into()).await;
    ticker.abort();
    let mut report = report?;
    report.bytes = report.count * size as u64;
    Ok(report)
}
