//! `wsgate-bench`: WebSocket load generation and the baselines wsgate is measured
//! against.
//!
//! - `load`: closed-loop echo load. Each connection sends a message, waits for its echo,
//!   and repeats. Reports msgs/s, MB/s and round-trip percentiles.
//! - `churn`: each worker connects, sends one message, reads the echo, closes, and
//!   repeats. Reports connects/s.
//! - `idle`: holds many idle connections and reports the server's RSS per connection.
//! - `broadcast`: one connection's message fanned out by a plugin to all the others;
//!   reports the time to the last delivery. With `--split-url`, half of the receivers
//!   are on another node of a cluster.
//! - `manage`: management API `POST @connections/{id}` load over keep-alive.
//! - `startup`: gateway start-up with many plugins, cold and warm compile cache.
//! - `echo-server`: a raw tokio-tungstenite echo server, the practical ceiling; with
//!   `--relay URL`, the native baseline of the HTTP integration (S9): each message POSTed
//!   to URL as a Lambda proxy event, the answer's `body` sent back.
//! - `http-server`: an axum server answering 200 to every POST, the `manage` baseline.
//! - `lambda-backend`: an axum server answering every Lambda proxy event with its own
//!   body, the backend of S9.
//!
//! With `--pid`, the server's RSS and CPU are read from /proc over the measured window.
//! A progress line goes to stderr every second; `--json` prints one JSON object.

mod broadcast;
mod churn;
mod echo_server;
mod idle;
mod lambda;
mod load;
mod manage;
mod open;
mod report;
mod server_stats;
mod startup;

use std::path::PathBuf;

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
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
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
        /// Send this text instead of `size` bytes (e.g. a testing plugin's command).
        #[arg(long)]
        payload: Option<String>,
        /// Total messages per second over all connections, instead of a closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Count a reply that is not the message sent as an error, not a round trip.
        #[arg(long)]
        expect_echo: bool,
    },
    /// Connect, one message, close, repeat.
    Churn {
        #[command(flatten)]
        common: Common,
    },
    /// Hold idle connections; report the server's RSS per connection.
    Idle {
        /// The endpoint, e.g. ws://127.0.0.1:8080/demo/echo.
        #[arg(long)]
        url: String,
        /// Connections to hold.
        #[arg(long, default_value_t = 15_000)]
        connections: usize,
        /// The server's process id (required: RSS is the figure).
        #[arg(long)]
        pid: u32,
        /// Echo one message of this many bytes on each connection before idling.
        #[arg(long, default_value_t = 0)]
        message_bytes: usize,
        /// Also read the server's RSS this many seconds after every connection closed
        /// (what it gives back); 0: not read.
        #[arg(long, default_value_t = 0)]
        left_after: u64,
        /// A name for the report.
        #[arg(long, default_value = "idle")]
        label: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One connection's message fanned out by a plugin to every other connection.
    Broadcast {
        /// A room route whose plugin relays each message to the other connections.
        #[arg(long)]
        url: String,
        /// The same room on another node of a cluster: half of the receivers connect here
        /// instead of to `--url` (the sender stays on `--url`).
        #[arg(long, value_name = "URL")]
        split_url: Option<String>,
        /// Connections in the room, the sender included.
        #[arg(long, default_value_t = 10_001)]
        connections: usize,
        /// Broadcasts to time, one after another.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        /// A name for the report.
        #[arg(long, default_value = "broadcast")]
        label: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Management API `POST @connections/{id}` load over keep-alive connections.
    Manage {
        /// `--url` is the management endpoint, e.g. http://127.0.0.1:9090/demo;
        /// `--connections` is HTTP connections, each posting to a WebSocket of its own.
        #[command(flatten)]
        common: Common,
        /// A route answering `{"connection_id":…}`, e.g. ws://127.0.0.1:8080/demo/connections.
        /// Without it, posts go to made-up ids (for `http-server`).
        #[arg(long)]
        ws_url: Option<String>,
        /// Bearer key of the tenant.
        #[arg(long)]
        bearer: Option<String>,
        /// Bytes per posted message.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Gateway start-up with many plugins, cold then warm compile cache.
    Startup {
        /// The gateway binary.
        #[arg(long, default_value = "target/release/wsgate")]
        gateway: PathBuf,
        /// A component to copy; repeat it to copy several in turn.
        #[arg(long, default_values = ["target/plugins/wasm32-wasip2/release/echo.wasm"])]
        plugin: Vec<PathBuf>,
        /// How many distinct plugins to configure.
        #[arg(long, default_value_t = 50)]
        plugins: usize,
        /// A name for the report.
        #[arg(long, default_value = "startup")]
        label: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A raw tokio-tungstenite echo server.
    EchoServer {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Relay each message to every other connection instead of echoing it.
        #[arg(long, conflicts_with = "relay")]
        room: bool,
        /// POST each message to this URL as an AWS Lambda proxy event (one pooled
        /// keep-alive client for all connections) and send back the answer's `body`.
        #[arg(long, value_name = "URL")]
        relay: Option<String>,
    },
    /// An axum server answering 200 to every POST: the `manage` baseline.
    HttpServer {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// An HTTP backend answering each Lambda proxy event with `{"statusCode":200,"body":
    /// <the event's body>}`: the backend of the integration scenario.
    LambdaBackend {
        /// Address to listen on; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load {
            common,
            size,
            payload,
            rate,
            expect_echo,
        } => {
            let shape = load::Shape {
                size,
                payload,
                rate,
                expect_echo,
            };
            load::run(&common, &shape).await?.print(&common)
        }
        Command::Idle {
            url,
            connections,
            pid,
            message_bytes,
            left_after,
            label,
            json,
        } => idle::run(&url, connections, message_bytes, pid, left_after)
            .await?
            .print(&label, json),
        Command::Broadcast {
            url,
            split_url,
            connections,
            rounds,
            label,
            json,
        } => broadcast::run(&url, split_url.as_deref(), connections, rounds)
            .await?
            .print(&label, json),
        Command::Manage {
            common,
            ws_url,
            bearer,
            size,
        } => {
            let target = manage::Target {
                ws_url,
                bearer,
                size,
            };
            manage::run(&common, &target).await?.print(&common)
        }
        Command::Startup {
            gateway,
            plugin,
            plugins,
            label,
            json,
        } => startup::run(&gateway, &plugin, plugins)?.print(&label, json),
        Command::Churn { common } => churn::run(&common).await?.print(&common),
        Command::EchoServer {
            listen,
            room,
            relay,
        } => return echo_server::run(&listen, room, relay.as_deref()).await,
        Command::HttpServer { listen } => return manage::serve_baseline(&listen).await,
        Command::LambdaBackend { listen } => return lambda::serve_backend(&listen).await,
    }
    Ok(())
}
