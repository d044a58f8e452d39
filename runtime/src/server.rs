//! The WebSocket listener: accept, the TLS handshake (with `[tls]`), read the upgrade,
//! find tenant and route, run `$connect`, answer 101 or an HTTP error, then hand the
//! socket to its task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, error, info_span, warn};

/// tungstenite's own read buffer per connection: the most it reads per call.
const READ_BUFFER_BYTES: usize = 256;

/// The longest a socket refused at the gateway's connection cap may take over its TLS
/// handshake before it gets its 503: it holds a descriptor and no slot meanwhile.
const REFUSAL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

use crate::gateway::{ConnectionSlot, Gateway, Snapshot};
use crate::handshake::{self, ReadError, Refusal, Request};
use crate::lazy_read::LazyReadStream;
use crate::metrics::Limit;
use crate::plugin::ConnectResponse;
use crate::proxy;
use crate::registry::{Attachment, ConnectionMeta, now_ms};
use crate::socket::{self, RouteRef};
use crate::socket_io;
use crate::sources::{Refused, SourceSlot};
use crate::tenant::{Route, Tenant};
use crate::tls::{self, Stream};

/// Sampled warnings: at most one line a second, counting the events folded into it, so
/// a flood of failures cannot flood the log.
#[derive(Debug, Default)]
pub struct Sampled {
    /// When the last line was written.
    last: Option<std::time::Instant>,
    /// Events since then.
    folded: u64,
}

impl Sampled {
    /// Counts an event; calls `emit` with the count when a line is due.
    pub fn warn(&mut self, emit: impl FnOnce(u64)) {
        self.folded += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            emit(self.folded);
            self.folded = 0;
            self.last = Some(now);
        }
    }
}

/// What a listener does when `accept` fails. Out of file descriptors, the pending
/// client would wait in the backlog and the loop would spin: so the listener closes a
/// spare descriptor it keeps for this, accepts the client and closes it at once, and
/// takes the spare back. Warnings are sampled.
#[derive(Debug)]
pub struct AcceptErrors {
    /// A descriptor held in reserve (`/dev/null`).
    spare: Option<std::fs::File>,
    /// The sampled warning.
    log: Sampled,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        Self {
            spare: std::fs::File::open("/dev/null").ok(),
            log: Sampled::default(),
        }
    }
}

impl AcceptErrors {
    /// Handles a failed accept on `listener` (named `name` in the log).
    pub async fn failed(&mut self, name: &str, listener: &TcpListener, err: std::io::Error) {
        self.log.warn(|failures| {
            warn!(listener = name, error = %err, failures, "accept failed; shedding clients")
        });
        let out_of_descriptors = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if out_of_descriptors && self.spare.take().is_some() {
            if let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
            {
                drop(stream);
            }
            self.spare = std::fs::File::open("/dev/null").ok();
        }
        // Keep serving the open connections and retry shortly rather than spinning.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections until `shutdown` is cancelled. Connections accepted on
/// `listener` watch `generation`; a listener a reload hands over (it moved `listen.ws`)
/// replaces it, and its connections watch the generation that came with it.
pub async fn serve(
    mut listener: TcpListener,
    gateway: Arc<Gateway>,
    mut generation: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            (moved, watched) = gateway.listeners.ws_handoff().next() => {
                tracing::info!(address = ?moved.local_addr().ok(), "WebSocket listener moved");
                listener = moved;
                generation = watched;
                continue;
            }
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Taken before the request is read: a socket that never finishes its
                // upgrade holds a descriptor as surely as an open connection does.
                let slot = gateway.connection_slot();
                let gateway = gateway.clone();
                let stop = socket::Stop {
                    shutdown: shutdown.clone(),
                    listener: generation.clone(),
                };
                tokio::spawn(
                    handle(stream, peer, slot, gateway, stop).instrument(info_span!("ws", %peer)),
                );
            }
            Err(err) => errors.failed("ws", &listener, err).await,
        }
    }
}

/// Serves one accepted TCP connection: the upgrade, then the WebSocket until it closes.
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Option<ConnectionSlot>,
    gateway: Arc<Gateway>,
    stop: socket::Stop,
) {
    let Some(slot) = slot else {
        gateway.metrics.refused("", 503);
        gateway.metrics.limit_hits("", Limit::MaxConnections, 1);
        warn!("the gateway's connection limit is reached; refusing a socket");
        let refusal = Refusal::new(503, "the gateway is at its connection limit; retry later\n");
        // Answered without reading the request: a client at the cap gets its answer at
        // once, and nothing it sends is parsed. Boxed: under TLS this holds a handshake,
        // which every connection's task would otherwise make room for.
        Box::pin(refuse_unread(stream, &gateway, &refusal)).await;
        return;
    };
    // The handshake's futures are large and short-lived, and whatever this task holds
    // across the connection's life every idle connection pays for: so the upgrade and
    // the socket loop are boxed, and only their small results are kept here.
    let Some(open) = Box::pin(open(stream, peer, &gateway)).await else {
        return;
    };
    let Open {
        ws,
        connection,
        context,
        tenant_slot,
        source_slot,
        span,
    } = open;
    Box::pin(
        async move {
            let (mut sink, mut stream) = socket_io::split(ws);
            let ended = socket::serve(&mut sink, &mut stream, &connection, &context, &stop).await;
            if ended.linger
                && let Some(socket) = socket_io::reunite(sink, stream)
            {
                socket::lingering_close(socket.into_inner()).await;
            }
            socket::finish(connection, &context, &ended).await;
            // Counted towards the tenant's and the gateway's limits until the
            // connection is gone.
            drop(tenant_slot);
            drop(source_slot);
            drop(slot);
        }
        .instrument(span),
    )
    .await;
}

/// TLS handshakes made at once only to answer 503 at the connection cap.
const MAX_TLS_REFUSALS: usize = 32;

/// Answers `refusal` on a socket without reading its request. Under TLS the handshake
/// comes first, bounded by [`REFUSAL_HANDSHAKE_TIMEOUT`] as well as the handshake
/// timeout: the socket holds no slot, so how long it may stay open is the only bound on
/// how many such sockets there are.
async fn refuse_unread(tcp: TcpStream, gateway: &Gateway, refusal: &Refusal) {
    let tls = gateway.tls();
    // At the cap, under TLS, each answer costs a handshake (a signature) at the moment
    // the node is overloaded: a few at a time; past them the socket is just closed.
    static REFUSING: std::sync::LazyLock<tokio::sync::Semaphore> =
        std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_TLS_REFUSALS));
    let _refusing = match &tls {
        Some(_) => match REFUSING.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => return,
        },
        None => None,
    };
    let bound = gateway
        .snapshot()
        .limits
        .handshake_timeout
        .min(REFUSAL_HANDSHAKE_TIMEOUT);
    match tokio::time::timeout(bound, tls::accept(tcp, tls)).await {
        Ok(Ok(mut stream)) => handshake::respond(&mut stream, refusal).await,
        Ok(Err(err)) => debug!(error = %err, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

/// An upgraded connection, ready for its socket loop.
struct Open {
    ws: WebSocketStream<LazyReadStream>,
    connection: Attachment,
    context: socket::Context,
    /// Held for the connection's life: it counts towards the tenant's limit.
    tenant_slot: ConnectionSlot,
    /// Held for the connection's life: it counts towards its source's limit.
    source_slot: Option<SourceSlot>,
    span: Span,
}

/// Reads and checks the upgrade request, runs `$connect` and completes the upgrade.
async fn open(stream: TcpStream, peer: SocketAddr, gateway: &Arc<Gateway>) -> Option<Open> {
    let Accepted {
        stream,
        leftover,
        tenant,
        route,
        meta,
        key,
        tenant_slot,
        source_slot,
    } = accept(stream, peer, gateway).await?;
    let span = info_span!("connection", tenant = %tenant.id, route = %route.template, connection = %meta.id, client = %meta.source_ip);
    let (ws, connection) = upgrade(stream, leftover, &tenant, &route, meta, &key)
        .instrument(span.clone())
        .await?;
    span.in_scope(|| debug!("connected"));
    let context = socket::Context {
        route: RouteRef::Live {
            gateway: gateway.clone(),
            tenant: tenant.id.clone(),
            template: route.template.clone(),
        },
        limits: tenant.limits.clone(),
        metrics: tenant.metrics.clone(),
        share: tenant.share.clone(),
    };
    Some(Open {
        ws,
        connection,
        context,
        tenant_slot,
        source_slot,
        span,
    })
}

/// An upgrade request that passed every check before `$connect`.
struct Accepted {
    stream: Stream,
    /// Bytes the client sent after its request head.
    leftover: Vec<u8>,
    tenant: Arc<Tenant>,
    route: Arc<Route>,
    meta: ConnectionMeta,
    /// The client's `Sec-WebSocket-Key`.
    key: String,
    /// Held for the connection's life: it counts towards the tenant's limit.
    tenant_slot: ConnectionSlot,
    /// Held for the connection's life, when its source's open connections are limited.
    source_slot: Option<SourceSlot>,
}

/// Completes the TLS handshake (with `[tls]`), reads the request head and checks it;
/// answers and returns `None` if it is refused.
async fn accept(mut tcp: TcpStream, peer: SocketAddr, gateway: &Gateway) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    let snapshot = gateway.snapshot();
    let limits = &snapshot.limits;
    // One deadline for the PROXY header, the TLS handshake and the request head: a
    // client cannot hold a socket longer by being slow at each.
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    // A trusted load balancer names the client before anything else is sent.
    let mut proxied = None;
    if snapshot.proxy_protocol && snapshot.proxies.contains(peer.ip()) {
        match tokio::time::timeout_at(deadline, proxy::read_header(&mut tcp)).await {
            Ok(Ok(client)) => proxied = Some(client.unwrap_or(peer)),
            Ok(Err(err)) => {
                warn!(error = %err, "a trusted proxy's connection has no valid PROXY header; closing it (listen.proxy_protocol)");
                return None;
            }
            Err(_) => {
                debug!("PROXY header timed out");
                return None;
            }
        }
    }
    // Read at each accept: a reload's new certificate serves the next handshake.
    let tls = gateway.tls();
    let mut stream = match tokio::time::timeout_at(deadline, tls::accept(tcp, tls)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            debug!(error = %err, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            return None;
        }
    };
    let read = handshake::read_request(&mut stream, limits.max_request_head_bytes);
    let (request, leftover) = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(ReadError::TooLarge)) => {
            handshake::respond(&mut stream, &Refusal::new(431, "request head too large\n")).await;
            return None;
        }
        Ok(Err(ReadError::Malformed(why))) => {
            let refusal = Refusal::new(400, format!("malformed HTTP request: {why}\n"));
            handshake::respond(&mut stream, &refusal).await;
            return None;
        }
        Ok(Err(ReadError::Io(err))) => {
            debug!(error = %err, "client left before its request");
            return None;
        }
        Err(_) => {
            debug!("handshake timed out");
            return None;
        }
    };
    if request.path() == "/health" {
        let body = crate::admin::health_text(gateway);
        handshake::respond(&mut stream, &Refusal::new(200, body)).await;
        return None;
    }
    if request.path() == "/ready" {
        let (status, text) = crate::admin::ready_status(gateway);
        handshake::respond(&mut stream, &Refusal::new(status, format!("{text}\n"))).await;
        return None;
    }
    if gateway.draining() {
        gateway.metrics.refused("", 503);
        let refusal = Refusal::new(503, "the gateway is draining; connect to another node\n")
            .with_header("retry-after", "1");
        handshake::respond(&mut stream, &refusal).await;
        return None;
    }
    if request.uri.len() > limits.max_uri_bytes {
        gateway.metrics.refused("", 414);
        handshake::respond(&mut stream, &Refusal::new(414, "request URI too long\n")).await;
        return None;
    }
    let client = proxied.unwrap_or_else(|| {
        let forwarded: Vec<&str> = request
            .headers
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .map(|(_, value)| value.as_str())
            .collect();
        SocketAddr::new(
            snapshot.proxies.forwarded_client(peer.ip(), &forwarded),
            peer.port(),
        )
    });
    // Before anything of the tenant runs: a connect flood stops here.
    let source_slot = match gateway.sources().admit(client.ip(), limits) {
        Ok(slot) => slot,
        Err(refused) => {
            let (limit, refusal) = match refused {
                Refused::Open(open) => (
                    Limit::SourceConnections,
                    Refusal::new(429, format!("{open} connections are open from your address, the most allowed; close one and retry\n"))
                        .with_header("retry-after", "1"),
                ),
                Refused::Rate(wait) => (
                    Limit::SourceRate,
                    Refusal::new(429, "too many new connections from your address; retry later\n")
                        .with_header("retry-after", &retry_after(wait)),
                ),
            };
            gateway.metrics.limit_hits("", limit, 1);
            gateway.metrics.refused("", 429);
            handshake::respond(&mut stream, &refusal).await;
            return None;
        }
    };
    match prepare(&snapshot, &request, client) {
        Ok((tenant, route, meta, key, tenant_slot)) => Some(Accepted {
            stream,
            leftover,
            tenant,
            route,
            meta,
            key,
            tenant_slot,
            source_slot,
        }),
        Err((tenant, refusal)) => {
            match tenant {
                Some(tenant) => tenant.metrics.refused(refusal.status),
                None => gateway.metrics.refused("", refusal.status),
            }
            handshake::respond(&mut stream, &refusal).await;
            None
        }
    }
}

/// Runs `$connect`, registers the connection and completes the upgrade; answers and
/// returns `None` if `$connect` refuses or the client leaves.
async fn upgrade(
    mut stream: Stream,
    leftover: Vec<u8>,
    tenant: &Tenant,
    route: &Route,
    meta: ConnectionMeta,
    key: &str,
) -> Option<(WebSocketStream<LazyReadStream>, Attachment)> {
    // The cluster-wide cap, like the node's, is taken before `$connect` runs.
    let admission = match tenant
        .registry
        .admit(&meta.id, tenant.limits.max_connections)
        .await
    {
        Ok(admission) => admission,
        Err(_) => {
            tenant.metrics.limit_hit(Limit::MaxConnections);
            let refusal = Refusal::new(
                429,
                "the tenant is at its connection limit across the cluster; retry later\n",
            );
            tenant.metrics.refused(refusal.status);
            handshake::respond(&mut stream, &refusal).await;
            return None;
        }
    };
    let (mut meta, accept_headers) = match run_connect(route, meta).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tenant.metrics.refused(refusal.status);
            handshake::respond(&mut stream, &refusal).await;
            return None;
        }
    };
    meta.trim_for_life();
    // Register before the 101 goes out: once the client sees it, peers must be able
    // to find it (a chat's join notice, a management POST). If the client left, the
    // dropped attachment unregisters it.
    let connection = tenant
        .registry
        .attach(meta, tenant.limits.outbound_queue_bytes)
        .await;
    admission.attached();
    let response = handshake::switching_protocols(
        key,
        connection.meta().subprotocol.as_deref(),
        &accept_headers,
    );
    // Flushed: under TLS a write may leave the last record in rustls until a flush.
    let written = match stream.write_all(response.as_bytes()).await {
        Ok(()) => stream.flush().await,
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        debug!(error = %err, "client left during the upgrade");
        return None;
    }
    tenant.metrics.upgraded();
    let config = WebSocketConfig::default()
        .max_message_size(Some(tenant.limits.max_message_bytes))
        .max_frame_size(Some(tenant.limits.frame_bytes()))
        // Small, because tungstenite keeps it resident for the connection's life; the
        // stream underneath reads in large chunks held only while unread.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0);
    // The bytes read past the head go under tungstenite with the rest of the stream, so
    // that they pass the frame gate too.
    let stream = LazyReadStream::new(stream, leftover);
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    Some((ws, connection))
}

/// What `prepare` yields: tenant, route, the connection's facts, the client's key, and
/// the connection's slot under the tenant's cap.
type Prepared = (
    Arc<Tenant>,
    Arc<Route>,
    ConnectionMeta,
    String,
    ConnectionSlot,
);

/// Finds tenant and route and checks the upgrade and the tenant's limits; builds the
/// connection's facts. A refusal names the tenant when it is known (for metrics).
fn prepare(
    snapshot: &Snapshot,
    request: &Request,
    client: SocketAddr,
) -> Result<Prepared, (Option<Arc<Tenant>>, Refusal)> {
    let not_found = || (None, Refusal::new(404, "no such tenant or route\n"));
    let (tenant, path) = snapshot
        .resolve(request.header("host"), request.path())
        .ok_or_else(not_found)?;
    let refuse = |refusal: Refusal| (Some(tenant.clone()), refusal);
    let matched = tenant
        .routes
        .at(path)
        .ok_or_else(|| refuse(not_found().1))?;
    let route = matched.value.clone();
    let key = handshake::websocket_key(request)
        .map_err(refuse)?
        .to_owned();
    let limits = &tenant.limits;
    if let Some(origin) = request.header("origin")
        && !limits.allowed_origins.is_empty()
        && !limits
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    {
        return Err(refuse(Refusal::new(
            403,
            format!("origin {origin} is not allowed\n"),
        )));
    }
    if let Err(wait) = tenant.share.connect() {
        tenant.metrics.limit_hit(Limit::ConnectRate);
        return Err(refuse(
            Refusal::new(
                429,
                "the tenant is past its new connections per second; retry later\n",
            )
            .with_header("retry-after", &retry_after(wait)),
        ));
    }
    // Taken here, before `$connect` runs, and held for the connection's life: upgrades
    // under way count, so concurrent ones cannot overshoot the cap together.
    let Some(tenant_slot) = tenant.slots.take(limits.max_connections) else {
        tenant.metrics.limit_hit(Limit::MaxConnections);
        return Err(refuse(Refusal::new(
            429,
            "the tenant is at its connection limit; retry later\n",
        )));
    };
    let query_params = request
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
        .unwrap_or_default();
    let meta = ConnectionMeta {
        id: tenant.registry.new_id(),
        tenant: tenant.id.clone(),
        route: route.template.clone(),
        path: path.to_owned(),
        uri: request.uri.clone(),
        headers: request.headers.iter().map(|(n, v)| (n, v)).collect(),
        path_params: matched.params.iter().map(|(n, v)| (n, v)).collect(),
        query_params,
        source_ip: client.ip().to_string(),
        user_agent: request.header("user-agent").map(str::to_owned),
        requested_subprotocols: request
            .header_tokens("sec-websocket-protocol")
            .map(str::to_owned)
            .collect(),
        subprotocol: None,
        connected_at: now_ms(),
        context: None,
    };
    Ok((tenant, route, meta, key, tenant_slot))
}

/// A `Retry-After` value: whole seconds, at least one.
fn retry_after(wait: Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// Runs the `$connect` plugin, if any. Accepting returns the facts with the chosen
/// subprotocol and the extra 101 headers; refusing returns the HTTP answer.
async fn run_connect(
    route: &Route,
    mut meta: ConnectionMeta,
) -> Result<(ConnectionMeta, Vec<(String, String)>), Refusal> {
    let Some(plugin) = &route.connect else {
        return Ok((meta, Vec::new()));
    };
    let internal = || Refusal::new(500, "Internal server error\n");
    let (response, context) = Box::pin(plugin.on_connect(&route.template, &meta))
        .await
        .map_err(|err| {
            error!(plugin = %plugin.name(), kind = %err.kind(), error = %err, "$connect failed");
            internal()
        })?;
    match response {
        ConnectResponse::Accept(accept) => {
            if let Some(protocol) = &accept.subprotocol
                && !meta.requested_subprotocols.contains(protocol)
            {
                error!(plugin = %plugin.name(), subprotocol = %protocol, "$connect chose a subprotocol the client did not offer");
                return Err(internal());
            }
            if let Some((name, _)) = accept
                .headers
                .iter()
                .find(|(n, v)| !handshake::valid_header(n, v))
            {
                error!(plugin = %plugin.name(), header = %name, "$connect returned an invalid header");
                return Err(internal());
            }
            meta.subprotocol = accept.subprotocol;
            meta.context = context.map(String::into_boxed_str);
            Ok((meta, accept.headers))
        }
        ConnectResponse::Reject(reject) => {
            if !(300..=599).contains(&reject.status)
                || reject
                    .headers
                    .iter()
                    .any(|(n, v)| !handshake::valid_header(n, v))
            {
                error!(plugin = %plugin.name(), status = reject.status, "$connect rejected with an invalid status or header");
                return Err(internal());
            }
            debug!(status = reject.status, "$connect rejected the connection");
            Err(Refusal {
                status: reject.status,
                headers: reject.headers,
                body: reject.body,
            })
        }
    }
}
