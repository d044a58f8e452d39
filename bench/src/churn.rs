//! Connection churn: connect, send one message, read the echo, close; repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::load::progress;
use crate::report::{Report, histogram};
use crate::server_stats::Window;

/// One connect, message, echo, close.
async fn cycle(url: &str) -> anyhow::Result<()> {
    let (mut client, _) = tokio_tungstenite::connect_async(url).await?;
    client.send(Message::text("churn")).await?;
    match client.next().await {
        Some(Ok(Message::Text(_))) => {}
        other => bail!("no echo: {other:?}"),
    }
    client.close(None).await?;
    // Drain until the server's close, so the close handshake is part of the cycle.
    while let Some(Ok(_)) = client.next().await {}
    Ok(())
}

/// Runs the churn and reports.
pub async fn run(common: &Common) -> anyhow::Result<Report> {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs_f64(common.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(done.clone(), "connects", end);
    let tasks: Vec<_> = (0..common.connections)
        .map(|_| {
            let url = common.url.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut count, mut errors) = (0u64, 0u64);
                while Instant::now() < end {
                    let started = Instant::now();
                    match cycle(&url).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if started >= warm_until {
                                count += 1;
                                let _ = latency.record(started.elapsed().as_micros().max(1) as u64);
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (count, errors, latency)
            })
        })
        .collect();
    tokio::time::sleep_until(warm_until.into()).await;
    let window = Window::start(common.pid);
    let mut report = Report {
        unit: "connects",
        count: 0,
        bytes: 0,
        elapsed: Duration::from_secs_f64(common.seconds),
        errors: 0,
        latency: histogram(),
        server: None,
    };
    for task in tasks {
        let (count, errors, latency) = task.await?;
        report.count += count;
        report.errors += errors;
        report.latency.add(latency)?;
    }
    report.server = window.and_then(Window::finish);
    ticker.abort();
    if report.count == 0 {
        bail!("no connection completed against {}", common.url);
    }
    Ok(report)
}
