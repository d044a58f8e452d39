//! What the web console reads beyond the connections API: who a key is (`GET /-/me`),
//! a tenant's figures (`GET /{tenant}/@stats`, for the tenant's own keys, since
//! `/metrics` spans tenants and is the operator's), and the node at a glance for the
//! operator (`GET /-/status`).

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::connections::timestamp;
use crate::gateway::{Gateway, Snapshot};
use crate::tenant::Tenant;

/// How long the cluster's nodes and counts are waited for: the console must get an
/// answer even when Redis gives none.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The tenants' open connections, in the order given, and their scope: `cluster`,
/// counted in Redis as a close-all reaches them (one pipelined read; a failure is not
/// taken for an outage, since the console asking must not change what the node does),
/// or `node`, this node's gauges, with no cluster or when Redis does not answer in time.
async fn counts(gateway: &Gateway, tenants: &[&Arc<Tenant>]) -> (Vec<u64>, &'static str) {
    if let Some(cluster) = gateway.cluster() {
        let ids: Vec<&str> = tenants.iter().map(|t| &*t.id).collect();
        if let Ok(Ok(counts)) =
            tokio::time::timeout(REDIS_TIMEOUT, cluster.tenant_counts(&ids)).await
        {
            return (counts, "cluster");
        }
    }
    let local = tenants
        .iter()
        .map(|t| {
            gateway
                .metrics
                .figures(&t.id, std::iter::empty())
                .connections
        })
        .collect();
    (local, "node")
}

/// `GET /{tenant}/@stats`: the tenant's open connections, message and byte totals
/// since the process started (the console differences two reads into rates), plugin
/// failures by kind, route templates, and the WebSocket URL its routes are under.
pub async fn tenant(
    gateway: &Gateway,
    snapshot: &Snapshot,
    tenant: &Arc<Tenant>,
    headers: &HeaderMap,
) -> Value {
    let figures = gateway
        .metrics
        .figures(&tenant.id, snapshot.plugin_names(&tenant.id));
    let failures: serde_json::Map<String, Value> = figures
        .failures
        .iter()
        .map(|(kind, count)| (kind.as_str().to_owned(), json!(count)))
        .collect();
    let (connections, scope) = counts(gateway, &[tenant]).await;
    let mut routes: Vec<&str> = tenant.routes.values().map(|r| &*r.template).collect();
    routes.sort_unstable();
    json!({
        "tenant": &*tenant.id,
        "time": timestamp(crate::registry::now_ms()),
        "connections": connections[0],
        "connectionsScope": scope,
        "maxConnections": tenant.limits.max_connections,
        "messagesReceived": figures.messages_received,
        "messagesSent": figures.messages_sent,
        "bytesReceived": figures.bytes_received,
        "bytesSent": figures.bytes_sent,
        "failures": failures,
        "routes": routes,
        "websocket": websocket_origin(gateway, snapshot, headers).map(|origin| format!("{origin}/{}", tenant.id)),
    })
}

/// `GET /-/status`: the node, its tenants, its cluster and its last reloads.
pub async fn status(gateway: &Gateway, snapshot: &Snapshot) -> Value {
    let mut tenants: Vec<&Arc<Tenant>> = snapshot.tenants().collect();
    tenants.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let nodes = async {
        let cluster = gateway.cluster()?;
        let (nodes, more) = match tokio::time::timeout(REDIS_TIMEOUT, cluster.nodes()).await {
            Ok(Ok((listed, more))) => (json!(listed), more),
            Ok(Err(err)) => (json!({ "error": err }), 0),
            Err(_) => (
                json!({ "error": format!("Redis did not answer within {REDIS_TIMEOUT:?}") }),
                0,
            ),
        };
        Some(json!({ "node": cluster.node(), "nodes": nodes, "moreNodes": more }))
    };
    // Both wait on Redis at most REDIS_TIMEOUT, at the same time.
    let ((counts, scope), cluster) = tokio::join!(counts(gateway, &tenants), nodes);
    let tenants: Vec<Value> = tenants
        .iter()
        .zip(counts)
        .map(|(t, connections)| json!({ "id": &*t.id, "connections": connections }))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "startedAt": timestamp(gateway.started_at),
        "draining": gateway.draining(),
        "degraded": gateway.degraded(),
        "tenants": tenants,
        "connectionsScope": scope,
        "cluster": cluster,
        "reloads": gateway.reloads.newest_first(),
    })
}

/// The WebSocket listener's origin as the browser that made this request can reach it:
/// `[admin] console_websocket_origin` when set; else the host name it used for the
/// admin listener, the WebSocket listener's port, `ws` or `wss`. `None` before the
/// listener serves.
pub fn websocket_origin(
    gateway: &Gateway,
    snapshot: &Snapshot,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(origin) = &snapshot.admin.console_websocket_origin {
        return crate::config::websocket_origin(origin);
    }
    let bound = gateway.listeners.ws_bound()?;
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .and_then(host_name)
        .map(str::to_owned)
        .unwrap_or_else(|| match bound.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    let scheme = if gateway.tls().is_some() { "wss" } else { "ws" };
    Some(format!("{scheme}://{host}:{}", bound.port()))
}

/// The host name of a `Host` header without its port, if it is a plain DNS name, an
/// IPv4 address or a bracketed IPv6 address: it goes into a header (the console's
/// `Content-Security-Policy`), so anything else is refused rather than escaped.
pub fn host_name(host: &str) -> Option<&str> {
    // A bracketed IPv6 address holds colons: the port is after the `]`.
    let split = host.rfind(':').filter(|&i| !host[i..].contains(']'));
    let name = match split {
        Some(i) if is_port(&host[i + 1..]) => &host[..i],
        Some(_) => return None,
        None => host,
    };
    crate::config::plain_host(name).then_some(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn only_plain_host_names_pass_into_a_header() {
        assert_eq!(host_name("example.com:9090"), Some("example.com"));
        assert_eq!(host_name("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:9090"), Some("[::1]"));
        assert_eq!(host_name("[::1]"), Some("[::1]"));
        for hostile in [
            "",
            "a b",
            "evil.com; script-src *",
            "x'unsafe-inline'",
            "a:b:c",
            "[::1]x",
            "[not-v6]:1",
            "host:99999999",
            "ex\u{e4}mple.com",
            "a\r\nX-Injected: 1",
        ] {
            assert_eq!(host_name(hostile), None, "{hostile:?}");
        }
    }
}
