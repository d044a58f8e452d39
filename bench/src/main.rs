//! `wsgate-bench`: WebSocket load generation and the baselines wsgate is measured
//! against.
//!
//! - `load`: closed-loop echo load. Each connection sends a message, waits for its echo,
//!   and repeats. Reports msgs/s, MB/s and round-trip percentiles.
//! - `churn`: each worker connects, sends one message, reads the echo, closes, and
//!   repeats. Reports connects/s.
//! - `echo-server`: a raw tokio-tungstenite echo server, the practical ceiling.
//!
//! With `--pid`, the server's RSS and CPU are read from /proc over the measured window.
//! A progress line goes to stderr every second; `--json` prints one JSON object.

mod churn;
mod echo_server;
mod load;
mod report;
mod server_stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "WebSocket load generator and baseline echo server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every measuring command shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// The echo endpoint, e.g. ws://127.0.0.1:8080/demo/echo.
    #[arg(long)]
    pub url: String,
    /// Concurrent connections (or churn workers).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Seconds to measure, after a one-second warm-up.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The server's process id, to report its RSS and CPU.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A name for the report (defaults to the URL).
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop echo load.
    Load {
        #[command(flatten)]
        common: Common,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Connect, one message, close, repeat.
    Churn {
        #[command(flatten)]
        common: Common,
    },
    /// A raw tokio-tungstenite echo server.
    EchoServer {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load { common, size } => load::run(&common, size).await?.print(&common),
        Command::Churn { common } => churn::run(&common).await?.print(&common),
        Command::EchoServer { listen } => return echo_server::run(&listen).await,
    }
    Ok(())
}
