//! Connection churn: connect, send one message, read the echo, close; repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::load::progress;
use crate::report::{Report, collect, histogram};

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
    let warm_until = Instant::now() + Duration::from_secs_f64(common.warmup);
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
    let report = collect(tasks, "connects", common, warm_until.into()).await;
    ticker.abort();
    let report = report?;
    Ok(report)
}
