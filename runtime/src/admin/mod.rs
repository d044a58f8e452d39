//! The admin listener: `/health`, `/metrics` (Prometheus text), the AWS-compatible `@connections` API
//! (`/{tenant}/@connections[/{id}]`) and the Yandex-compatible connection REST API
//! (`/apigateways/websocket/v1/connections/{id}`).
//!
//! - `auth`: bearer keys and SigV4, in an order that reveals no key.
//! - `failures`: failed authentications limited per source address.
//! - `replay`: signed writes remembered against replays, bounded per tenant.
//! - `connections`: the operations both APIs share.
//! - `logs`: `GET /{tenant}/@logs`, the tenant's execution log, read or followed.
//! - `console`: the web console's files at `/ui/`, with their security headers.
//! - `stats`: what the console reads: `GET /-/me`, `/{tenant}/@stats`, `/-/status`.
//! - `error`: errors in AWS's or Yandex's shape.
//! - `listener`: the accept loop, with head timeouts and a connection cap.
//!
//! Paths are matched here rather than by a router so that `@` may arrive as `%40`, ids
//! may be percent-encoded, and every failure, even an unknown path or method, answers
//! in the caller's API's error shape.

pub mod auth;
pub mod connections;
pub mod console;
pub mod error;
pub mod failures;
pub mod listener;
pub mod logs;
pub mod replay;
pub mod stats;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::close::Close;
use crate::execlog;
use crate::gateway::{Gateway, Snapshot};
use crate::tenant::Tenant;
use auth::Authenticator;
use connections::FrameType;
use error::ApiError;
use listener::Addresses;
use replay::ReplayKey;

/// What a Yandex `:send` envelope adds to the data it carries: base64 makes 3 bytes 4,
/// and the JSON around it is small.
fn yandex_body_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.div_ceil(3) * 4 + 1024
}

/// State shared by admin requests.
struct Admin {
    auth: Authenticator,
    gateway: Arc<Gateway>,
}

/// The health answer: `OK`, or in a cluster cut off from its Redis `degraded: <why>`,
/// still with 200, since the node serves its own clients and a load balancer must not
/// pull it.
pub fn health_text(gateway: &crate::Gateway) -> String {
    match gateway.degraded() {
        None => "OK".into(),
        Some(reason) => format!("degraded: {reason}"),
    }
}

/// The readiness answer: 200 `ready` while the node takes new clients, 503 `draining`
/// once it drains, so a load balancer sends new clients elsewhere.
pub fn ready_status(gateway: &crate::Gateway) -> (u16, &'static str) {
    if gateway.draining() {
        (503, "draining")
    } else {
        (200, "ready")
    }
}

/// The admin router. The limits on failed authentications and on remembered
/// signatures are read from the snapshot in force now, and kept across reloads.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let auth = Authenticator::new(&gateway.snapshot().admin, gateway.metrics.clone())
        .in_cluster(gateway.cluster().cloned());
    let admin = Arc::new(Admin { auth, gateway });
    Router::new().fallback(dispatch).with_state(admin)
}

/// A request: its head, and its body until authentication reads it.
struct Call {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Query,
    /// Taken, under the caller's tenant's cap, once the credentials have passed.
    body: std::sync::Mutex<Option<Body>>,
    /// Whether this is the Yandex API (its body is a base64 JSON envelope).
    yandex: bool,
    /// How long the body may take to arrive.
    body_timeout: std::time::Duration,
    /// Where the connection came from and arrived (set by the listener).
    addresses: Option<Addresses>,
}

/// A request's query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn dispatch(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let segments: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .skip(1)
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let yandex =
        segments.len() == 5 && segments[..4] == ["apigateways", "websocket", "v1", "connections"];
    let snapshot = admin.gateway.snapshot();
    let call = Call {
        query: Query::parse(parts.uri.query()),
        addresses: parts
            .extensions
            .get::<Addresses>()
            .map(|a| behind_proxies(&snapshot, *a, &parts.headers)),
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: std::sync::Mutex::new(Some(Body::new(body))),
        yandex,
        body_timeout: snapshot.admin.body_timeout,
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let replay_key = std::sync::Mutex::new(None);
    let who = std::sync::Mutex::new(None);
    let caller = Caller {
        admin: &admin,
        snapshot: &snapshot,
        call: &call,
        replay_key: &replay_key,
        who: &who,
    };
    let response = match segments[..] {
        // West Connectivity's solution health check answers the same, so its monitors
        // work unchanged.
        ["health"] | ["api", "v1", "solution", "health"] if call.method == Method::GET => {
            return health_text(&admin.gateway).into_response();
        }
        ["ready"] if call.method == Method::GET => {
            let (status, text) = ready_status(&admin.gateway);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return (status, text).into_response();
        }
        // `/ui/@connections` is tenant `ui`'s API, not the console.
        ["ui"] | ["ui", _] if !segments.get(1).is_some_and(|s| s.starts_with('@')) => {
            let rest = call.uri.path().strip_prefix("/ui").unwrap_or_default();
            return console::serve(&admin.gateway, &call.method, &call.headers, rest).await;
        }
        ["-", "me"] => return me(&caller).await.unwrap_or_else(ApiError::aws),
        ["-", "status"] => {
            return node_status(&admin, &snapshot, &call)
                .await
                .unwrap_or_else(ApiError::aws);
        }
        ["-", action @ ("reload" | "drain")] => {
            return operations(&admin, &snapshot, &call, action)
                .await
                .unwrap_or_else(ApiError::aws);
        }
        ["metrics"] if call.method == Method::GET => {
            if let Err(error) =
                admin
                    .auth
                    .operator(&snapshot.admin.bearer_keys, &call.headers, call.addresses)
            {
                return error.aws();
            }
            let degraded = admin.gateway.degraded().is_some();
            admin.gateway.metrics.cluster_degraded(degraded);
            let text = admin.gateway.metrics.encode();
            return ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text).into_response();
        }
        _ if yandex => yandex_api(&caller, segments[4]).await.unwrap_or_else(ApiError::yandex),
        [tenant, "@connections"] => aws_collection(&caller, tenant).await.unwrap_or_else(ApiError::aws),
        [tenant, "@connections", id] => aws_connection(&caller, tenant, id).await.unwrap_or_else(ApiError::aws),
        [tenant, "@logs"] => execution_log(&caller, tenant).await.unwrap_or_else(ApiError::aws),
        [tenant, "@stats"] => tenant_stats(&caller, tenant).await.unwrap_or_else(ApiError::aws),
        _ => ApiError::NotFound(format!(
            "no such path {}: the API is /{{tenant}}/@connections/{{id}}, /{{tenant}}/@logs, /{{tenant}}/@stats and /apigateways/websocket/v1/connections/{{id}}; the console is at /ui/",
            call.uri.path()
        ))
        .aws(),
    };
    let who = who.into_inner().unwrap_or_else(|e| e.into_inner());
    // By the authenticated tenant only: a path names whatever the caller likes.
    admin.gateway.metrics.api_request(
        who.as_ref().map_or("", |w| &*w.tenant.id),
        response.status().as_u16(),
    );
    if let Some(who) = who
        && let Some((action, target)) = audited(&segments, &call.method, yandex)
        && let Some(log) = admin.gateway.execution_log(&who.tenant.id)
    {
        log.audit(execlog::Audit {
            target: target.map_or_else(|| who.tenant.id.to_string(), str::to_owned),
            key_id: who.key_id,
            source_ip: call.addresses.map(|a| a.peer.ip().to_string()),
            action,
            status: response.status().as_u16(),
        });
    }
    // A signed write that failed did not take effect: let a retry of it through.
    if !response.status().is_success()
        && let Some(key) = replay_key.into_inner().unwrap_or_else(|e| e.into_inner())
    {
        admin.auth.forget(&key);
    }
    response
}

/// `addresses` with the client behind `listen.trusted_proxies` as the peer, read from
/// `X-Forwarded-For` as on the WebSocket listener: failed authentications are charged
/// to it and the audit trail names it, not the load balancer every client shares.
fn behind_proxies(snapshot: &Snapshot, addresses: Addresses, headers: &HeaderMap) -> Addresses {
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = snapshot
        .proxies
        .forwarded_client(addresses.peer.ip(), &forwarded);
    Addresses {
        peer: std::net::SocketAddr::new(client, addresses.peer.port()),
        ..addresses
    }
}

/// The operator's endpoints: `POST /-/reload` and `POST /-/drain`.
async fn operations(
    admin: &Admin,
    snapshot: &Snapshot,
    call: &Call,
    action: &str,
) -> Result<Response, ApiError> {
    let key_id = admin
        .auth
        .operator(&snapshot.admin.bearer_keys, &call.headers, call.addresses)?;
    if call.method != Method::POST {
        return Err(method_not_allowed(&call.method, "POST"));
    }
    // Operators span tenants, so their actions go to the gateway's log, not to a
    // tenant's audit trail.
    tracing::info!(
        key_id,
        action,
        source = ?call.addresses.map(|a| a.peer.ip()),
        "operator action"
    );
    if action == "drain" {
        admin.gateway.drain();
        return Ok(axum::Json(json!({ "draining": true })).into_response());
    }
    match admin.gateway.reload().await {
        Ok(report) => Ok(axum::Json(report).into_response()),
        Err(err) => Err(ApiError::BadRequest(format!(
            "reload refused; the running config stays: {err}"
        ))),
    }
}

/// `GET /-/me`: whom the credentials belong to, `{"kind": "operator"}` or
/// `{"kind": "tenant", "tenant": ID}`, so the console knows which view to show.
async fn me(caller: &Caller<'_>) -> Result<Response, ApiError> {
    let call = caller.call;
    if call.method != Method::GET {
        return Err(method_not_allowed(&call.method, "GET"));
    }
    let operator = caller.admin.auth.is_operator(
        &caller.snapshot.admin.bearer_keys,
        &call.headers,
        call.addresses,
    )?;
    if operator {
        return Ok(axum::Json(json!({ "kind": "operator" })).into_response());
    }
    let (tenant, _) = caller.tenant(None).await?;
    Ok(axum::Json(json!({ "kind": "tenant", "tenant": &*tenant.id })).into_response())
}

/// `GET /-/status`: the node at a glance, for the operator.
async fn node_status(
    admin: &Admin,
    snapshot: &Snapshot,
    call: &Call,
) -> Result<Response, ApiError> {
    admin
        .auth
        .operator(&snapshot.admin.bearer_keys, &call.headers, call.addresses)?;
    if call.method != Method::GET {
        return Err(method_not_allowed(&call.method, "GET"));
    }
    Ok(axum::Json(stats::status(&admin.gateway, snapshot).await).into_response())
}

/// `GET /{tenant}/@stats`: the tenant's figures, for its own keys (and the operator).
async fn tenant_stats(caller: &Caller<'_>, tenant: &str) -> Result<Response, ApiError> {
    let call = caller.call;
    if call.method != Method::GET {
        return Err(method_not_allowed(&call.method, "GET"));
    }
    let (tenant, _) = caller.tenant(Some(tenant)).await?;
    let body = stats::tenant(
        &caller.admin.gateway,
        caller.snapshot,
        &tenant,
        &call.headers,
    )
    .await;
    Ok(axum::Json(body).into_response())
}

/// One request on its way through authentication and an operation.
struct Caller<'a> {
    admin: &'a Admin,
    /// The config in force when the request arrived.
    snapshot: &'a Snapshot,
    call: &'a Call,
    /// Set when a signed write is remembered against replays.
    replay_key: &'a std::sync::Mutex<Option<ReplayKey>>,
    /// Set once the caller is authenticated: whom the audit trail names.
    who: &'a std::sync::Mutex<Option<Who>>,
}

/// An authenticated caller, as the audit trail names it.
struct Who {
    tenant: Arc<Tenant>,
    /// The access key id, or the bearer key's `auth::bearer_key_id`.
    key_id: String,
}

/// The audit trail's name for a request and the connection id it targets (`None`: the
/// whole tenant); `None` for what is not audited. Reading the execution log is not,
/// or every read would add to what the next read returns; nor is reading the list of
/// connections, which dashboards poll (the console every 3 s) and which would push
/// the writes out of the bounded trail.
fn audited<'s>(
    segments: &[&'s str],
    method: &Method,
    yandex: bool,
) -> Option<(&'static str, Option<&'s str>)> {
    if yandex {
        let id = segments[4];
        return Some(match (id.strip_suffix(":send"), method) {
            (Some(id), &Method::POST) => ("ConnectionService.Send", Some(id)),
            (None, &Method::GET) => ("ConnectionService.Get", Some(id)),
            (None, &Method::DELETE) => ("ConnectionService.Disconnect", Some(id)),
            _ => return None,
        });
    }
    match (segments, method) {
        ([_, "@connections", id], &Method::POST) => Some(("PostToConnection", Some(id))),
        ([_, "@connections", id], &Method::GET) => Some(("GetConnection", Some(id))),
        ([_, "@connections", id], &Method::DELETE) => Some(("DeleteConnection", Some(id))),
        ([_, "@connections"], &Method::DELETE) => Some(("DeleteConnections", None)),
        _ => None,
    }
}

impl Caller<'_> {
    /// The calling tenant, within its request rate, and the request body. When `named`
    /// is given, the caller must be that tenant. Every check the headers allow comes
    /// before the body is read, and the body is read under the tenant's message cap.
    async fn tenant(&self, named: Option<&str>) -> Result<(Arc<Tenant>, Bytes), ApiError> {
        let call = self.call;
        let read_body = |tenant: Arc<Tenant>| async move {
            let max = tenant.limits.max_message_bytes;
            let limit = if call.yandex {
                yandex_body_limit(max)
            } else {
                max
            };
            let body = call.body.lock().unwrap_or_else(|e| e.into_inner()).take();
            read_body(body.unwrap_or_default(), limit, call.body_timeout).await
        };
        let request = auth::Request {
            keys: &self.snapshot.keys,
            admin: &self.snapshot.admin,
            method: &call.method,
            uri: &call.uri,
            headers: &call.headers,
            addresses: call.addresses,
            tenant: named,
            named: named.and_then(|id| self.snapshot.tenant(id).cloned()),
        };
        let authenticated = self.admin.auth.authenticate(&request, read_body).await?;
        *self.replay_key.lock().unwrap_or_else(|e| e.into_inner()) = authenticated.replay_key;
        *self.who.lock().unwrap_or_else(|e| e.into_inner()) = Some(Who {
            tenant: authenticated.tenant.clone(),
            key_id: authenticated.key_id,
        });
        Ok((authenticated.tenant, authenticated.body))
    }
}

/// Reads a body of at most `limit` bytes within `timeout`.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                ApiError::PayloadTooLarge(format!(
                    "the body is over this tenant's maximum of {limit} bytes"
                ))
            } else {
                ApiError::BadRequest(format!("the body could not be read: {err}"))
            })
        }
        Err(_) => Err(ApiError::BadRequest(format!(
            "the body did not arrive within {timeout:?}"
        ))),
    }
}

fn method_not_allowed(method: &Method, allowed: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "method {method} is not allowed here; use {allowed}"
    ))
}

fn frame_type(call: &Call) -> Result<FrameType, ApiError> {
    match call.query.get("type") {
        None => Ok(FrameType::Auto),
        Some("text") => Ok(FrameType::Text),
        Some("binary") => Ok(FrameType::Binary),
        Some(other) => Err(ApiError::BadRequest(format!(
            "type={other:?}: use type=text or type=binary"
        ))),
    }
}

async fn aws_connection(caller: &Caller<'_>, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let call = caller.call;
    if ![Method::GET, Method::POST, Method::DELETE].contains(&call.method) {
        return Err(method_not_allowed(&call.method, "GET, POST or DELETE"));
    }
    let (tenant, body) = caller.tenant(Some(tenant)).await?;
    match call.method {
        Method::POST => {
            connections::post(&tenant, id, body, frame_type(call)?).await?;
            Ok(StatusCode::OK.into_response())
        }
        Method::GET => {
            let info = connections::find(&tenant, id).await?;
            Ok(axum::Json(connections::describe(&info, tenant.expose_credentials)).into_response())
        }
        _ => {
            let close = connections::close_params(&call.query)?;
            connections::close(&tenant, id, close).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

async fn aws_collection(caller: &Caller<'_>, tenant: &str) -> Result<Response, ApiError> {
    let call = caller.call;
    if ![Method::GET, Method::DELETE].contains(&call.method) {
        return Err(method_not_allowed(
            &call.method,
            "GET (list) or DELETE (close all)",
        ));
    }
    let (tenant, _) = caller.tenant(Some(tenant)).await?;
    if call.method == Method::GET {
        return Ok(axum::Json(connections::list(&tenant, &call.query).await?).into_response());
    }
    let close = connections::close_params(&call.query)?;
    let closed = tenant.registry.close_all(close).await?;
    Ok(axum::Json(json!({ "closed": closed })).into_response())
}

/// `GET /{tenant}/@logs`: the tenant's execution log, for its own credentials only.
async fn execution_log(caller: &Caller<'_>, tenant: &str) -> Result<Response, ApiError> {
    let call = caller.call;
    if call.method != Method::GET {
        return Err(method_not_allowed(&call.method, "GET"));
    }
    let (tenant, _) = caller.tenant(Some(tenant)).await?;
    let log = caller
        .admin
        .gateway
        .execution_log(&tenant.id)
        .ok_or_else(|| ApiError::NotFound(format!("tenant {} has no execution log", tenant.id)))?;
    logs::get(&log, &call.query, &call.headers)
}

/// The body of Yandex's `connections/{id}:send`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YandexSend {
    data: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

async fn yandex_api(caller: &Caller<'_>, id_part: &str) -> Result<Response, ApiError> {
    let call = caller.call;
    let (id, send) = match id_part.strip_suffix(":send") {
        Some(id) => (id, true),
        None => (id_part, false),
    };
    let allowed = matches!(
        (send, &call.method),
        (true, &Method::POST) | (false, &Method::GET | &Method::DELETE)
    );
    if !allowed {
        let expected = if send { "POST" } else { "GET or DELETE" };
        return Err(method_not_allowed(&call.method, expected));
    }
    let (tenant, body) = caller.tenant(None).await?;
    let empty = || axum::Json(json!({})).into_response();
    match call.method {
        Method::GET => {
            let info = connections::find(&tenant, id).await?;
            Ok(axum::Json(connections::describe_yandex(&info)).into_response())
        }
        Method::DELETE => {
            connections::close(&tenant, id, Close::normal()).await?;
            Ok(empty())
        }
        _ => {
            let body: YandexSend = serde_json::from_slice(&body).map_err(|e| {
                ApiError::BadRequest(format!("the body must be {{\"data\": \"<base64>\", \"type\": \"TEXT\"|\"BINARY\"}}: {e}"))
            })?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(body.data.as_bytes())
                .map_err(|e| ApiError::BadRequest(format!("data is not valid base64: {e}")))?;
            let frame = match body.kind.as_deref() {
                None | Some("TYPE_UNSPECIFIED") => FrameType::Auto,
                Some("TEXT") => FrameType::Text,
                Some("BINARY") => FrameType::Binary,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "type {other:?} is unknown: use TEXT or BINARY"
                    )));
                }
            };
            connections::post(&tenant, id, Bytes::from(data), frame).await?;
            Ok(empty())
        }
    }
}
