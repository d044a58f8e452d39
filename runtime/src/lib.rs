//! wsgate: a WebSocket API gateway whose route handlers are sandboxed WebAssembly
//! components.
//!
//! # Layout
//!
//! Bottom layer (no imports from the layers above):
//! - [`config`]: the TOML schema, its defaults and validation (errors name file, key,
//!   reason).
//! - [`routes`]: route templates and route selection expressions.
//! - [`close`]: the one close-code rule and the close-reason limit.
//! - [`metrics`]: Prometheus counters and gauges, their label enums (`GET /metrics`).
//! - [`registry`]: connections as verbs (send, close, info, list, broadcast, count) over
//!   the gateway's own message type; the in-process registry and the socket's end of a
//!   connection.
//! - [`handshake`]: reading and answering the HTTP upgrade request.
//! - [`lazy_read`]: a socket read buffer that exists only while bytes are unread, and
//!   that hands bytes over only up to the end of a frame ([`frame_gate`]).
//! - [`tls`]: the `[tls]` certificate and key as a rustls server configuration, and the
//!   accepted socket, plain or TLS ([`tls::Stream`]), that both listeners serve.
//!
//! Plugins and tenants:
//! - [`plugin`]: the wasmtime engine, plugin loading, the instance pool, the event
//!   runner and the host API.
//! - [`fair`]: tenants' quotas across their connections (messages, bytes, new
//!   connections per second).
//! - [`tenant`]: a tenant in one snapshot: routes with resolved plugins, limits, registry.
//! - [`credentials`]: which tenant a management credential belongs to.
//! - [`gateway`]: what lives as long as the process, and the swappable [`gateway::Snapshot`]
//!   of what a reload replaces.
//! - [`check`]: `wsgate check`: a config and its plugins checked, every problem listed.
//! - [`execlog`]: each tenant's execution log: its plugins' log lines and failures and
//!   its management API audit trail, in a bounded ring that outlives reloads.
//!
//! Transport:
//! - [`server`]: the WebSocket accept loop, the upgrade and the `$connect` step.
//! - [`socket`]: one task per connection: frames to events, queue to frames.
//! - [`proxy`]: the client's address behind trusted load balancers (PROXY protocol,
//!   `X-Forwarded-For`).
//! - [`sources`]: open and new connections per source address, checked before the
//!   upgrade.
//! - [`socket_io`]: the socket's two halves for that task, which give a large
//!   message's buffers back once it is done.
//! - [`admin`]: the admin listener: health, metrics, AWS `@connections` and Yandex
//!   connection APIs.
//! - [`client`]: a management API client (bearer or SigV4), used by the CLI.
//! - [`cluster`]: cluster mode: the registry across nodes through Redis, node inboxes,
//!   heartbeats and the sweep of dead nodes.
//!
//! [`run`] takes bound listeners and a shutdown token from the caller, so tests can bind
//! port 0 and stop the gateway cleanly.

pub mod admin;
pub mod check;
pub mod client;
pub mod close;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod execlog;
pub mod fair;
pub mod frame_gate;
pub mod gateway;
pub mod handshake;
pub mod lazy_read;
pub mod listeners;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod server;
pub mod socket;
pub mod socket_io;
pub mod sources;
pub mod tenant;
pub mod tls;

#[cfg(test)]
mod fuzz;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use gateway::Gateway;

/// How long shutdown waits for connections to finish their close and `$disconnect`.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` is cancelled, then closes every connection with 1001 and
/// waits (bounded) for their `$disconnect` handlers.
pub async fn run(
    gateway: Arc<Gateway>,
    ws: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    gateway.publish_admin_address(Some(admin.local_addr()?));
    if let Some(cluster) = gateway.cluster() {
        cluster.start(gateway.clone(), shutdown.clone());
    }
    let generation = gateway.listeners.serve(&shutdown, ws.local_addr()?);
    let ws_task = tokio::spawn(server::serve(
        ws,
        gateway.clone(),
        generation,
        shutdown.clone(),
    ));
    let admin_task = tokio::spawn({
        let gateway = gateway.clone();
        let router = admin::router(gateway.clone());
        let limits = gateway.snapshot().admin.clone();
        let shutdown = shutdown.clone();
        async move {
            let tls = {
                let gateway = gateway.clone();
                move || gateway.tls()
            };
            admin::listener::serve(
                admin,
                router,
                limits,
                tls,
                gateway.listeners.admin_handoff(),
                shutdown,
            )
            .await
        }
    });
    shutdown.cancelled().await;
    // Followers of an execution log stream until told to stop; the admin listener's
    // graceful shutdown would otherwise wait on them.
    gateway.stop_following();
    ws_task.await?;
    admin_task.await?;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while gateway.registered() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown: some connections did not finish closing in time");
    }
    if let Some(cluster) = gateway.cluster() {
        cluster.leave().await;
    }
    Ok(())
}
