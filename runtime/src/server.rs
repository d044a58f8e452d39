//! The WebSocket listener: accept, read the upgrade, find tenant and route, run
//! `$connect`, answer 101 or an HTTP error, then hand the socket to its task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::gateway::Gateway;
use crate::handshake::{self, ReadError, Refusal, Request};
use crate::plugin::ConnectResponse;
use crate::registry::{Connection, ConnectionMeta, new_connection_id, now_ms};
use crate::socket;
use crate::tenant::{Route, Tenant};

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let gateway = gateway.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(
                    handle(stream, peer, gateway, shutdown).instrument(info_span!("ws", %peer)),
                );
            }
            Err(err) => {
                // Out of file descriptors or similar: keep serving the open connections
                // and retry shortly rather than spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let limits = &gateway.limits;
    let read = handshake::read_request(&mut stream, limits.max_request_head_bytes);
    let (request, leftover) = match tokio::time::timeout(limits.handshake_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(ReadError::TooLarge)) => {
            return handshake::respond(&mut stream, &Refusal::new(431, "request head too large\n"))
                .await;
        }
        Ok(Err(ReadError::Malformed(why))) => {
            return handshake::respond(
                &mut stream,
                &Refusal::new(400, format!("malformed HTTP request: {why}\n")),
            )
            .await;
        }
        Ok(Err(ReadError::Io(err))) => {
            return debug!(error = %err, "client left before its request");
        }
        Err(_) => return debug!("handshake timed out"),
    };
    if request.path() == "/health" {
        return handshake::respond(&mut stream, &Refusal::new(200, "OK")).await;
    }
    if request.uri.len() > limits.max_uri_bytes {
        gateway.metrics.refused("", 414);
        return handshake::respond(&mut stream, &Refusal::new(414, "request URI too long\n")).await;
    }
    let Some(_slot) = gateway.connection_slot() else {
        gateway.metrics.refused("", 503);
        warn!("the gateway's connection limit is reached; refusing an upgrade");
        return handshake::respond(
            &mut stream,
            &Refusal::new(503, "the gateway is at its connection limit; retry later\n"),
        )
        .await;
    };
    let (tenant, route, meta, key) = match prepare(&gateway, &request, peer) {
        Ok(prepared) => prepared,
        Err((tenant, refusal)) => {
            match tenant {
                Some(tenant) => tenant.metrics.refused(refusal.status),
                None => gateway.metrics.refused("", refusal.status),
            }
            return handshake::respond(&mut stream, &refusal).await;
        }
    };
    let span = info_span!("connection", tenant = %tenant.id, route = %route.template, connection = %meta.id);
    async move {
        let (meta, accept_headers) = match run_connect(&route, meta).await {
            Ok(accepted) => accepted,
            Err(refusal) => {
                tenant.metrics.refused(refusal.status);
                return handshake::respond(&mut stream, &refusal).await;
            }
        };
        // Register before the 101 goes out: once the client sees it, peers must be able
        // to find it (a chat's join notice, a management POST).
        let (connection, outbound) = Connection::new(meta, tenant.limits.outbound_queue_bytes);
        tenant.registry.insert(connection.clone());
        let response = handshake::switching_protocols(
            &key,
            connection.meta.subprotocol.as_deref(),
            &accept_headers,
        );
        if let Err(err) = stream.write_all(response.as_bytes()).await {
            tenant.registry.remove(connection.id());
            return debug!(error = %err, "client left during the upgrade");
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(tenant.limits.max_message_bytes))
            .max_frame_size(Some(tenant.limits.frame_bytes()))
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config))
            .await;
        debug!("connected");
        socket::run(ws, connection, outbound, &tenant, &route, shutdown).await;
    }
    .instrument(span)
    .await
}

/// What `prepare` yields: tenant, route, the connection's facts, the client's key.
type Prepared = (Arc<Tenant>, Arc<Route>, ConnectionMeta, String);

/// Finds tenant and route and checks the upgrade and the tenant's limits; builds the
/// connection's facts. A refusal names the tenant when it is known (for metrics).
fn prepare(
    gateway: &Gateway,
    request: &Request,
    peer: SocketAddr,
) -> Result<Prepared, (Option<Arc<Tenant>>, Refusal)> {
    let not_found = || (None, Refusal::new(404, "no such tenant or route\n"));
    let (tenant, path) = gateway
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
    if tenant.registry.len() >= limits.max_connections {
        tenant.metrics.limit_hit("max_connections");
        return Err(refuse(Refusal::new(
            429,
            "the tenant is at its connection limit; retry later\n",
        )));
    }
    let query_params = request
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let meta = ConnectionMeta {
        id: new_connection_id(),
        tenant: tenant.id.clone(),
        route: route.template.clone(),
        path: path.to_owned(),
        uri: request.uri.clone(),
        headers: request.headers.clone(),
        path_params: matched.params,
        query_params,
        source_ip: peer.ip().to_string(),
        user_agent: request.header("user-agent").map(str::to_owned),
        requested_subprotocols: request
            .header_tokens("sec-websocket-protocol")
            .map(str::to_owned)
            .collect(),
        subprotocol: None,
        connected_at: now_ms(),
    };
    Ok((tenant, route, meta, key))
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
    let response = plugin
        .on_connect(&route.template, &meta)
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
            Ok((meta, accept.headers))
        }
        ConnectResponse::Reject(reject) => {
            if !(400..=599).contains(&reject.status)
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
