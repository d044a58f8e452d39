//! Broadcast: N connections in one room; one of them sends, a plugin fans the message out
//! to every other one. The figure is the time from the send to the last delivery.
//!
//! Rounds run one after another, so each measures an idle gateway fanning out once.
//!
//! With a split URL (the same room on another node of a cluster), half of the receivers
//! connect there and the sender and the other half to the first URL: the broadcast must
//! cross to the other node, and a round still ends only when every receiver has it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::open::{open_many, raise_open_files_limit};
use crate::report::histogram;

/// How long one round may take before the run is declared failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The figures of a broadcast run.
pub struct BroadcastReport {
    /// Receivers per round.
    pub receivers: usize,
    /// Of them, those connected to the split URL.
    pub split_receivers: usize,
    /// Rounds completed.
    pub rounds: u64,
    /// Send to last delivery, microseconds.
    pub last: hdrhistogram::Histogram<u64>,
    /// Send to first delivery, microseconds.
    pub first: hdrhistogram::Histogram<u64>,
}

impl BroadcastReport {
    /// Prints the report.
    pub fn print(&self, label: &str, json: bool) {
        let q = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "label": label, "unit": "broadcasts", "receivers": self.receivers,
                    "split_receivers": self.split_receivers, "rounds": self.rounds,
                    "last_delivery_us": { "p50": q(&self.last, 0.5), "p99": q(&self.last, 0.99), "max": self.last.max() },
                    "first_delivery_us": { "p50": q(&self.first, 0.5) },
                })
            );
        } else {
            let split = match self.split_receivers {
                0 => String::new(),
                n => format!(" ({n} on the split URL)"),
            };
            println!(
                "{label}: broadcast to {} connections{split}, {} rounds: last delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; first delivery p50 {:.2} ms",
                self.receivers,
                self.rounds,
                q(&self.last, 0.5) as f64 / 1e3,
                q(&self.last, 0.99) as f64 / 1e3,
                self.last.max() as f64 / 1e3,
                q(&self.first, 0.5) as f64 / 1e3,
            );
        }
    }
}

/// Opens `connections` (one sender, the rest receivers) and runs `rounds`. All connect to
/// `url`, or with `split_url` half of the receivers connect there instead.
pub async fn run(
    url: &str,
    split_url: Option<&str>,
    connections: usize,
    rounds: u64,
) -> anyhow::Result<BroadcastReport> {
    if connections < 2 {
        bail!("a broadcast needs at least 2 connections: one sender and a receiver");
    }
    raise_open_files_limit()?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let split_receivers = if split_url.is_some() {
        (connections - 1) / 2
    } else {
        0
    };
    let mut clients = open_many(url, connections - split_receivers, config).await?;
    let mut sender = clients.pop().expect("at least two connections");
    if let Some(split_url) = split_url {
        clients.extend(open_many(split_url, split_receivers, config).await?);
    }
    let receivers = clients.len();
    // Every receiver reports the round it saw and when.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(u64, Instant)>();
    for client in clients {
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            let (_sink, mut stream) = client.split();
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && let Some(round) = text.strip_prefix('r').and_then(|r| r.parse().ok())
                {
                    let _ = seen_tx.send((round, Instant::now()));
                }
            }
        });
    }
    drop(seen_tx);

    let mut report = BroadcastReport {
        receivers,
        split_receivers,
        rounds: 0,
        last: histogram(),
        first: histogram(),
    };
    for round in 0..rounds {
        let sent = Instant::now();
        sender.send(Message::text(format!("r{round}"))).await?;
        let (mut count, mut first, mut last) = (0, None, sent);
        while count < receivers {
            let (seen_round, at) = tokio::time::timeout(ROUND_TIMEOUT, seen.recv())
                .await
                .with_context(|| {
                    format!("round {round}: only {count} of {receivers} deliveries within {ROUND_TIMEOUT:?}")
                })?
                .context("every receiver has gone")?;
            if seen_round != round {
                bail!(
                    "round {round}: a receiver saw round {seen_round}, so a delivery was lost or duplicated"
                );
            }
            count += 1;
            first.get_or_insert(at);
            last = last.max(at);
        }
        report
            .last
            .record((last - sent).as_micros().max(1) as u64)?;
        report
            .first
            .record((first.unwrap_or(sent) - sent).as_micros().max(1) as u64)?;
        report.rounds += 1;
        eprintln!(
            "  round {round}: last delivery after {:.2} ms",
            (last - sent).as_secs_f64() * 1e3
        );
    }
    Ok(report)
}
