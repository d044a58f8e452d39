//! Management API load: `POST {endpoint}/@connections/{id}` over keep-alive HTTP/1.1
//! connections, closed loop, each worker posting to a WebSocket connection of its own
//! that drains what it is sent.
//!
//! The baseline is `http-server`: an axum server that answers 200 to every POST, the
//! ceiling of an HTTP handler with this client on this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::load::progress;
use crate::report::{Report, collect, histogram};

/// Where the posts go.
pub struct Target {
    /// A route whose plugin answers any message with `{"connection_id":"<id>"}`; each
    /// worker opens one connection there and posts to it. Without it, posts go to
    /// made-up ids (for the baseline server).
    pub ws_url: Option<String>,
    /// `Authorization: Bearer` key.
    pub bearer: Option<String>,
    /// Bytes per posted message.
    pub size: usize,
}

/// Opens a connection to `ws_url`, learns its id, and keeps draining it in the
/// background.
async fn receiver(ws_url: &str) -> anyhow::Result<String> {
    let (mut client, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .with_context(|| format!("connecting to {ws_url}"))?;
    client.send(Message::text("id?")).await?;
    let reply = match client.next().await {
        Some(Ok(Message::Text(text))) => text,
        other => bail!("{ws_url} did not answer with its connection id: {other:?}"),
    };
    let reply: serde_json::Value = serde_json::from_str(&reply)?;
    let id = reply["connection_id"]
        .as_str()
        .with_context(|| format!("{ws_url} answered {reply}, not {{\"connection_id\":…}}"))?
        .to_owned();
    tokio::spawn(async move { while let Some(Ok(_)) = client.next().await {} });
    Ok(id)
}

/// Runs the load and reports.
pub async fn run(common: &Common, target: &Target) -> anyhow::Result<Report> {
    let endpoint = common.url.trim_end_matches('/').to_owned();
    let mut urls = Vec::with_capacity(common.connections);
    for i in 0..common.connections {
        let id = match &target.ws_url {
            Some(ws_url) => receiver(ws_url).await?,
            None => format!("baseline{i}"),
        };
        urls.push(format!("{endpoint}/@connections/{id}"));
    }
    let warm_until = Instant::now() + Duration::from_secs_f64(common.warmup);
    let end = warm_until + Duration::from_secs_f64(common.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(done.clone(), "posts", end);
    let body = bytes::Bytes::from("x".repeat(target.size));
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let body = body.clone();
            let done = done.clone();
            let bearer = target.bearer.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut count, mut errors) = (0u64, 0u64);
                // One client per worker: one keep-alive connection each.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("a default HTTP client builds");
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let mut request = client.post(&url).body(body.clone());
                    if let Some(key) = &bearer {
                        request = request.bearer_auth(key);
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                            if sent >= warm_until {
                                count += 1;
                                let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
                            }
                        }
                        Ok(response) => {
                            let _ = response.bytes().await;
                            errors += 1;
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (count, errors, latency)
            })
        })
        .collect();
    let report = collect(tasks, "posts", common, warm_until.into()).await;
    ticker.abort();
    let mut report = report?;
    report.bytes = report.count * target.size as u64;
    Ok(report)
}

/// The baseline: answers 200 to every POST, until killed; prints `listening http=ADDR`.
pub async fn serve_baseline(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening http={}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(|_body: bytes::Bytes| async { "" }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}
