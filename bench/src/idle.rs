//! Idle connections: open many, send nothing, and read what the server holds for them.
//!
//! The figure is the growth of the server's RSS divided by the connections, taken once
//! every upgrade has completed and again after a settling second (the larger of the two
//! counts). The kernel's TCP memory (from /proc/net/sockstat) is reported beside it: it
//! is not in any process's RSS, but a node holding a million connections pays it too.
//!
//! With `message_bytes`, each connection first echoes one message of that size and then
//! idles: what a connection keeps of its largest message shows as the difference from
//! the fresh figure.
//!
//! With `left_after`, the server's RSS is read again that long after every connection
//! closed, with no traffic in between: what a server gives back after a burst.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::open::{Client, open_many, raise_open_files_limit};
use crate::server_stats::rss_kib;

/// What holding the connections cost.
pub struct IdleReport {
    /// Connections held.
    pub connections: usize,
    /// Server RSS before any connection, in KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every connection open, in KiB.
    pub rss_after_kib: u64,
    /// Kernel TCP memory growth, in KiB (all sockets, both ends on this machine).
    pub kernel_tcp_kib: u64,
    /// Kernel slab growth (socket, file and TCP structures), in KiB, for both ends.
    pub kernel_slab_kib: u64,
    /// How long opening them took.
    pub open_time: Duration,
    /// The size of the one message each connection echoed before idling (0: none).
    pub message_bytes: usize,
    /// Server RSS in KiB, and the seconds after the connections closed it was read at.
    pub rss_left: Option<(u64, u64)>,
}

impl IdleReport {
    /// Server RSS per connection, in KiB.
    pub fn per_connection_kib(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / self.connections as f64
    }

    /// Prints the report.
    pub fn print(&self, label: &str, json: bool) {
        let per = self.per_connection_kib();
        let connects = self.connections as f64 / self.open_time.as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "label": label, "unit": "idle", "connections": self.connections,
                    "rss_before_kib": self.rss_before_kib, "rss_after_kib": self.rss_after_kib,
                    "per_connection_kib": per, "kernel_tcp_kib": self.kernel_tcp_kib,
                    "kernel_slab_kib": self.kernel_slab_kib,
                    "connects_per_sec": connects, "message_bytes": self.message_bytes,
                    "rss_left_kib": self.rss_left.map(|(kib, _)| kib),
                    "left_after_s": self.rss_left.map(|(_, after)| after),
                })
            );
        } else {
            if self.message_bytes > 0 {
                println!(
                    "{label}: each connection echoed one {}-byte message before idling",
                    self.message_bytes
                );
            }
            println!(
                "{label}: {} idle connections, server RSS {} → {} KiB = {per:.2} KiB per connection; \
                 kernel TCP memory +{} KiB, kernel slab +{} KiB (both ends); opened at {connects:.0}/s",
                self.connections,
                self.rss_before_kib,
                self.rss_after_kib,
                self.kernel_tcp_kib,
                self.kernel_slab_kib
            );
            if let Some((kib, after)) = self.rss_left {
                println!("{label}: server RSS {kib} KiB {after} s after every connection closed");
            }
        }
    }
}

/// Pages of memory the kernel's TCP stack holds, from /proc/net/sockstat.
fn kernel_tcp_pages() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("TCP:"))?;
            let mut words = line.split_whitespace();
            words.find(|w| *w == "mem")?;
            words.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The kernel's slab memory in KiB, from /proc/meminfo.
fn kernel_slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Slab:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Echoes one message of `bytes` on every connection, 64 at a time.
async fn echo_once(held: &mut [Client], bytes: usize) -> anyhow::Result<()> {
    let message = vec![0x5Au8; bytes];
    let mut echoing = FuturesUnordered::new();
    let mut clients = held.iter_mut();
    let mut done = 0;
    loop {
        while echoing.len() < 64
            && let Some(client) = clients.next()
        {
            let message = Message::binary(message.clone());
            echoing.push(async move {
                client.send(message).await?;
                match tokio::time::timeout(Duration::from_secs(30), client.next()).await {
                    Ok(Some(Ok(Message::Binary(echo)))) if echo.len() == bytes => Ok(()),
                    other => bail!("expected the {bytes}-byte echo, got {other:?}"),
                }
            });
        }
        match echoing.next().await {
            Some(echoed) => echoed?,
            None => return Ok(()),
        }
        done += 1;
        if done % 1000 == 0 {
            eprintln!("  {done:>6} connections echoed");
        }
    }
}

/// Opens `connections` to `url`, echoes one message of `message_bytes` on each if that
/// is not 0, holds them, and measures the server `pid`; then, if `left_after` is not 0,
/// closes them and reads the server's RSS that many seconds later.
pub async fn run(
    url: &str,
    connections: usize,
    message_bytes: usize,
    pid: u32,
    left_after: u64,
) -> anyhow::Result<IdleReport> {
    // This client holds as many sockets as the server does.
    let limit = raise_open_files_limit()?;
    if (limit as usize) < connections + 100 {
        bail!(
            "this process may open {limit} files, too few for {connections} connections: lower --connections"
        );
    }
    // One connection first, so what the server sets up once (a warm plugin instance,
    // lazily built state) is not charged to the idle ones.
    let (warm, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let rss_before_kib = rss_kib(pid).context("reading the server's RSS from /proc")?;
    let tcp_before = kernel_tcp_pages();
    let slab_before = kernel_slab_kib();
    // The client's own buffers stay small, so its memory does not crowd the server's.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(message_bytes.max(64 << 10)));
    let started = Instant::now();
    let mut held = open_many(url, connections, config).await?;
    let open_time = started.elapsed();
    if message_bytes > 0 {
        echo_once(&mut held, message_bytes).await?;
    }
    let rss_open = rss_kib(pid).context("reading the server's RSS from /proc")?;
    // Let the server finish what the upgrades started (plugin events, timers).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_settled = rss_kib(pid).context("reading the server's RSS from /proc")?;
    let kernel_tcp_kib = kernel_tcp_pages().saturating_sub(tcp_before) * 4;
    let kernel_slab_kib = kernel_slab_kib().saturating_sub(slab_before);
    drop((held, warm));
    let rss_left = if left_after > 0 {
        // A reading at a set time after the closes, not a wait for an event: the figure
        // is what the server holds then.
        tokio::time::sleep(Duration::from_secs(left_after)).await;
        let kib = rss_kib(pid).context("reading the server's RSS from /proc")?;
        Some((kib, left_after))
    } else {
        None
    };
    Ok(IdleReport {
        connections,
        rss_before_kib,
        rss_after_kib: rss_open.max(rss_settled),
        kernel_tcp_kib,
        kernel_slab_kib,
        open_time,
        message_bytes,
        rss_left,
    })
}
