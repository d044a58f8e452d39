//! The `wsgate` command: `wsgate serve --config FILE` runs the gateway;
//! `wsgate check --config FILE` checks a config and its plugins without serving;
//! `wsgate connections list|get|send|disconnect` calls its management API;
//! `wsgate logs` reads or follows a tenant's execution log.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use wsgate::{Config, Gateway};

/// jemalloc instead of the system allocator: after a burst of connections closes,
/// glibc's heap stays at its peak, fragmented, and the messages that follow run slower
/// through it (the S9 integration path 10–30% slower after S4's 15,000 connections,
/// its RSS held at 160 MB); jemalloc gives the memory back and keeps its speed, at the
/// same cost per idle connection (see the README's crate table).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start: purge freed pages from a background
/// thread. Without it jemalloc returns memory only while the gateway allocates, so a
/// gateway left idle after a burst kept it all (145 MB of RSS 30 s after S4's 15,000
/// connections left; with the thread, 35 MB 2 s after and 31 MB from 10 s).
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static, NUL-terminated string.
    Some(unsafe { &*c"background_thread:true".as_ptr() });

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
        /// How the log on stderr is written.
        #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Check a config without serving: validate it, compile and link every plugin, print
    /// a table of them, and list every problem on stderr (exit status 1 if any).
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage connections through the management API.
    Connections {
        #[command(subcommand)]
        command: cli::Command,
    },
    /// Read a tenant's execution log through the management API: its plugins' log
    /// lines and failed events, and its management API audit trail.
    Logs(cli::Logs),
}

/// How the log on stderr is written.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Readable lines, coloured on a terminal.
    Human,
    /// One JSON object per line: the event's fields at the top level, `span` with the
    /// current span's fields (a connection's tenant, route and connection id), `spans`
    /// with every span the line was logged in.
    Json,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve { log_format, .. } => *log_format,
        _ => LogFormat::Human,
    };
    init_log(format);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config, .. } => {
            runtime.block_on(serve(config)).map(|()| ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config, runtime.handle().clone()),
        Command::Connections { command } => runtime
            .block_on(cli::run(command))
            .map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => runtime
            .block_on(cli::logs(args))
            .map(|()| ExitCode::SUCCESS),
    }
}

/// Logs to stderr, filtered by `WSGATE_LOG` (default `info`).
fn init_log(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WSGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The span fields make every line of a connection, a plugin's included, carry
        // its tenant, route and connection id, so a log store can select on them.
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// `wsgate check`: the table of plugins on stdout and each problem on stderr as
/// `file: key: reason`; exit status 1 when there is a problem.
fn check(path: &Path, runtime: tokio::runtime::Handle) -> anyhow::Result<ExitCode> {
    let (config, problems) = match Config::load_all(path) {
        Ok(loaded) => loaded,
        Err(problem) => {
            eprintln!("{}", wsgate::check::problem_line(&problem));
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = wsgate::check::check(&config, problems, runtime)?;
    print!("{}", report.table());
    for problem in &report.problems {
        eprintln!("{}", wsgate::check::problem_line(problem));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    // Installed first: until then SIGHUP and SIGTERM take their default action, which
    // ends the process, and loading plugins can take seconds.
    let hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
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
    let draining = gateway.clone();
    tokio::spawn(async move {
        wait_for_signal(terminate).await;
        // `/ready` answers 503 from now on, so a load balancer moves new clients away
        // while the node still serves the ones it has.
        let delay = draining.drain();
        if !delay.is_zero() {
            tracing::info!(
                ?delay,
                "draining: /ready answers 503; closing connections after the drain delay"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: closing connections with 1001");
        signal.cancel();
    });
    tokio::spawn(wsgate::gateway::reload_on_hangup(gateway.clone(), hangups));
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

async fn wait_for_signal(mut terminate: Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
