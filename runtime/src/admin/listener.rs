//! The admin listener's accept loop: HTTP/1, over TLS with `[tls]`, with a timeout on
//! every request head (which bounds idle keep-alive connections too, and within which
//! the TLS handshake must also finish) and a cap on open connections, so whoever reaches
//! the port cannot hold the gateway's memory or file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::config::AdminConfig;
use crate::server::AcceptErrors;

/// Where a request's connection came from and where it arrived: a request extension
/// every request served by [`serve`] carries. Authentication limits failures by `peer`
/// and accepts SigV4 signatures made for `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address.
    pub peer: SocketAddr,
    /// The gateway's address the client connected to.
    pub local: SocketAddr,
}

/// How long shutdown lets an admin request in flight finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `router` on `listener` under `limits` until `shutdown`, then lets requests in
/// flight finish. `tls` gives the TLS settings to accept with (`None`: plain HTTP); it
/// is called at every accept, so a reload's new certificate serves the next connection.
/// A listener handed over by `moves` (a reload moved `listen.admin`) replaces the one
/// accepted on; connections already accepted finish.
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    limits: AdminConfig,
    tls: impl Fn() -> Option<Arc<rustls::ServerConfig>>,
    moves: &crate::listeners::Handoff,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut errors = AcceptErrors::default();
    let mut refused = crate::server::Sampled::default();
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            (moved, _) = moves.next() => {
                tracing::info!(address = %listener_addr(&moved), "admin listener moved");
                listener = moved;
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                errors.failed("admin", &listener, err).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            refused.warn(|n| {
                tracing::warn!(
                    refused = n,
                    max = limits.max_connections,
                    "admin connections at admin.max_connections; closing new ones"
                )
            });
            continue;
        };
        let addresses = Addresses {
            peer,
            local: stream
                .local_addr()
                .unwrap_or_else(|_| listener_addr(&listener)),
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut router = router.clone();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(addresses);
            router.call(request)
        });
        let tls = tls();
        let mut http = http.clone();
        let header_timeout = limits.header_timeout;
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let accepted = Instant::now();
            let secure = tls.is_some();
            let handshake = tokio::time::timeout(header_timeout, crate::tls::accept(stream, tls));
            let stream = tokio::select! {
                handshake = handshake => match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "admin: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "admin: TLS handshake timed out");
                        return;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            if secure {
                // The handshake counts within the header timeout: each head on this
                // connection must arrive within what the handshake left of it.
                http.header_read_timeout(header_timeout.saturating_sub(accepted.elapsed()));
            }
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    // Bounded: a client that stops reading mid-answer (a stalled log
                    // follower, a long list) must not hold the shutdown.
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// The listener's own address, for a socket whose local address cannot be read.
fn listener_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
