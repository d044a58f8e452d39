//! `wsgate-bench`: a closed-loop WebSocket load generator, and the raw tokio-tungstenite
//! echo server that serves as the baseline (the same WebSocket stack with no gateway
//! and no Wasm: the practical ceiling).
//!
//! - `wsgate-bench load --url ws://… [--connections 50] [--size 64] [--seconds 5]`:
//!   each connection sends a message, waits for its echo, and repeats. Prints msgs/s and
//!   round-trip percentiles; `--json` for scripts.
//! - `wsgate-bench echo-server --listen 127.0.0.1:0`: prints `listening ws=ADDR`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "WebSocket load generator and baseline echo server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop echo load against a WebSocket URL.
    Load {
        /// The echo endpoint, e.g. ws://127.0.0.1:8080/demo/echo.
        #[arg(long)]
        url: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to measure, after a one-second warm-up.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A raw tokio-tungstenite echo server (the baseline).
    EchoServer {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load {
            url,
            connections,
            size,
            seconds,
            json,
        } => {
            let report = load(&url, connections, size, Duration::from_secs_f64(seconds)).await?;
            report.print(&url, json);
            Ok(())
        }
        Command::EchoServer { listen } => echo_server(&listen).await,
    }
}

struct Report {
    messages: u64,
    elapsed: Duration,
    errors: u64,
    rtt: Histogram<u64>,
}

impl Report {
    fn print(&self, url: &str, json: bool) {
        let rate = self.messages as f64 / self.elapsed.as_secs_f64();
        let us = |q: f64| self.rtt.value_at_quantile(q);
        if json {
            let value = serde_json::json!({
                "url": url, "messages": self.messages, "errors": self.errors,
                "msgs_per_sec": rate, "rtt_us": { "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p999": us(0.999) },
            });
            println!("{value}");
        } else {
            println!(
                "{url}: {rate:.0} msgs/s, rtt p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, errors {}",
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                self.errors
            );
        }
    }
}

async fn load(
    url: &str,
    connections: usize,
    size: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (client, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(client);
    }
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + duration;
    let payload = "x".repeat(size);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut rtt = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut messages, mut errors) = (0u64, 0u64);
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    if client.send(Message::text(payload.clone())).await.is_err() {
                        errors += 1;
                        break;
                    }
                    match client.next().await {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) if sent >= warmup_end => {
                            messages += 1;
                            let _ = rtt.record(sent.elapsed().as_micros().max(1) as u64);
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (messages, errors, rtt)
            })
        })
        .collect();
    let mut report = Report {
        messages: 0,
        elapsed: duration,
        errors: 0,
        rtt: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for task in tasks {
        let (messages, errors, rtt) = task.await?;
        report.messages += messages;
        report.errors += errors;
        report.rtt.add(rtt)?;
    }
    if report.messages == 0 {
        bail!("no message came back from {url}");
    }
    Ok(report)
}

async fn echo_server(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening ws={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            while let Some(Ok(message)) = stream.next().await {
                if (message.is_text() || message.is_binary()) && sink.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
