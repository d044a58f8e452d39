//! The `wsgate` command: `wsgate serve --config FILE` runs the gateway;
//! `wsgate connections list|get|send|disconnect` calls its management API.

mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use wsgate::{Config, Gateway};

/// A WebSocket API gateway whose route handlers are sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage connections through the management API.
    Connections {
        #[command(subcommand)]
        command: cli::Command,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WSGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Connections { command } => runtime.block_on(cli::run(command)),
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    raise_open_files_limit();
    let gateway = Arc::new(Gateway::new(&config)?);
    let ws = TcpListener::bind(config.listen.ws).await.with_context(|| {
        format!(
            "cannot listen for WebSocket clients on {} (listen.ws)",
            config.listen.ws
        )
    })?;
    let admin = TcpListener::bind(config.listen.admin)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the admin API on {} (listen.admin)",
                config.listen.admin
            )
        })?;
    // Scripts and tests read these two lines to find the bound ports.
    println!("listening ws={}", ws.local_addr()?);
    println!("listening admin={}", admin.local_addr()?);

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing connections with 1001");
        signal.cancel();
    });
    wsgate::run(gateway, ws, admin, shutdown).await
}

/// Every connection is a file descriptor: raise the soft limit to the hard one, and
/// say what the cap is, since it bounds how many clients this process can hold.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit (caps concurrent connections)"),
        Err(err) => tracing::warn!(error = %err, "cannot read or raise the open files limit"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
