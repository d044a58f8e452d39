//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`), deny by default.
//!
//! wasmtime-wasi-http turns the guest's request resources into an `http::Request` and
//! hands it to [`Hooks::send_request`], synchronously inside the guest's `handle` call.
//! There, before anything is connected, the destination is checked against the
//! plugin's `allowed_outbound_hosts`: the scheme, host and port of the request's URI,
//! never a header. Userinfo is refused, and `Host` is written from the checked
//! authority (the guest cannot set `Host`: wasi-http keeps it a forbidden header).
//! No redirect is followed here; a guest that follows one makes a new request, which is
//! checked again.
//!
//! A granted request waits for one of the plugin's `max_outbound_requests` places and
//! goes out through the plugin's pooled client, all within `outbound_timeout`; its
//! body is cut at `max_outbound_body_bytes` ([`body::Capped`]).
//!
//! - `client`: the pooled hyper client, TLS roots, and the runtime its tasks run on.
//! - `body`: the capped, timed response body.

mod body;
mod client;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use body::OpenBodies;

use http::header::{HOST, HeaderValue};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{Origin, PluginConfig};
use crate::metrics::{Outcome, PluginMetrics};
use crate::registry::now_ms;

/// A plugin's outbound HTTP: what it may call and the client it calls through (if it
/// was granted any origin), and where refusals are counted and logged.
pub struct Outbound {
    tenant: Arc<str>,
    plugin: Arc<str>,
    metrics: PluginMetrics,
    /// When a denial was last logged (ms since the epoch), to sample the log.
    denial_logged_ms: AtomicU64,
    /// `None` when the config grants no origin: every request is refused.
    pub reach: Option<Reach>,
}

/// What a plugin granted some origins may call, and how.
pub struct Reach {
    origins: Vec<Origin>,
    client: client::Client,
    /// The main runtime: where pooled connections are driven, and where a call runs
    /// when its event is on the low-priority lane (which has no I/O driver).
    runtime: tokio::runtime::Handle,
    /// Places for calls in flight (`max_outbound_requests`).
    requests: Arc<Semaphore>,
    /// Places for events waiting on calls, which give back their instance place for the
    /// wait (`plugin::wait`); as many as calls may be in flight.
    pub waiting: Arc<Semaphore>,
    timeout: Duration,
    max_body: u64,
}

impl Reach {
    /// When a call starting now must end: `outbound_timeout` from now, and never after
    /// the end of the event's waits.
    fn deadline(&self, waits_until: Instant) -> Instant {
        (Instant::now() + self.timeout).min(waits_until)
    }
}

/// A request [`Outbound::admit`] let through.
pub(crate) struct Admitted {
    /// `Host`, from the checked authority.
    host: HeaderValue,
    /// When the call must end.
    deadline: tokio::time::Instant,
    /// The main runtime, where the call runs.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("origins", &self.reach.as_ref().map(|r| &r.origins))
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// The outbound grant of a plugin's config. `base_dir` resolves
    /// `outbound_ca_file`; `runtime` runs the requests.
    pub fn from_config(
        tenant: &str,
        plugin: &str,
        config: &PluginConfig,
        base_dir: &Path,
        metrics: PluginMetrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<Outbound, String> {
        let reach = if config.allowed_outbound_hosts.is_empty() {
            None
        } else {
            let origins = config
                .allowed_outbound_hosts
                .iter()
                .map(|o| Origin::parse(o))
                .collect::<Result<Vec<_>, _>>()?;
            let limits = &config.limits;
            let ca_file = config.outbound_ca_file.as_ref().map(|f| base_dir.join(f));
            let client = client::build(
                runtime.clone(),
                limits.outbound_connect_timeout,
                limits.max_outbound_requests,
                ca_file.as_deref(),
            )?;
            Some(Reach {
                origins,
                client,
                runtime,
                requests: Arc::new(Semaphore::new(limits.max_outbound_requests)),
                waiting: Arc::new(Semaphore::new(limits.max_outbound_requests)),
                timeout: limits.outbound_timeout,
                max_body: limits.max_outbound_body_bytes as u64,
            })
        };
        Ok(Outbound {
            tenant: tenant.into(),
            plugin: plugin.into(),
            metrics,
            denial_logged_ms: AtomicU64::new(0),
            reach,
        })
    }

    /// Admits a request the grant allows: its `Host` header, and when the call must
    /// end (never after `waits_until`, the end of the event's waits). A refused request
    /// is logged and counted, and gets `None`.
    pub(crate) fn admit(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        waits_until: Instant,
    ) -> Option<Admitted> {
        match (self.check(method, uri), &self.reach) {
            (Ok(host), Some(reach)) => Some(Admitted {
                host,
                deadline: reach.deadline(waits_until).into(),
                runtime: reach.runtime.clone(),
            }),
            (Err(why), _) => {
                self.denied(method, uri, &why);
                None
            }
            (Ok(_), None) => unreachable!("check refuses every request without a grant"),
        }
    }

    /// The `Host` header for a request the grant allows, or why it is refused.
    fn check(&self, method: &http::Method, uri: &http::Uri) -> Result<HeaderValue, String> {
        let Some(reach) = &self.reach else {
            return Err("the plugin has no allowed_outbound_hosts".into());
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "the request has no host".to_string())?;
        if authority.as_str().contains('@') {
            return Err("userinfo (user@) in the authority is refused".into());
        }
        // By name, whatever the case: `connect` is an extension method to `http`.
        if method.as_str().eq_ignore_ascii_case("CONNECT") {
            return Err("CONNECT is refused".into());
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !reach.origins.iter().any(|o| o.allows(https, &host, port)) {
            return Err("the origin is not in allowed_outbound_hosts".into());
        }
        HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())
    }

    /// Logs a refused request, at most once a second per plugin, and counts it.
    fn denied(&self, method: &http::Method, uri: &http::Uri, why: &str) {
        self.metrics.outbound(Outcome::Denied, 0.0);
        let now = now_ms();
        let last = self.denial_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .denial_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // The query may carry secrets: the log gets scheme, authority and path.
            tracing::warn!(
                tenant = %self.tenant,
                plugin = %self.plugin,
                method = %method,
                url = %format_args!("{}://{}{}", uri.scheme_str().unwrap_or("?"), uri.authority().map_or("", |a| a.as_str()), uri.path()),
                "outbound HTTP call refused: {why}; grant the origin in the plugin's allowed_outbound_hosts"
            );
        }
    }

    /// Sends a checked request: waits for a place, then for the answer's head, all by
    /// `deadline`.
    async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        host: HeaderValue,
        deadline: tokio::time::Instant,
        open: Arc<OpenBodies>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let started = Instant::now();
        request.headers_mut().insert(HOST, host);
        let result = async {
            let reach = self.reach.as_ref().ok_or(Error::HttpRequestDenied)?;
            let permit = tokio::time::timeout_at(deadline, reach.requests.clone().acquire_owned())
                .await
                .map_err(|_| Error::ConnectionLimitReached)?
                .map_err(|_| Error::InternalError(Some("outbound places closed".into())))?;
            let response =
                match tokio::time::timeout_at(deadline, reach.client.request(request)).await {
                    Err(_) => return Err(Error::HttpResponseTimeout),
                    Ok(Err(err)) => return Err(client_error(&err)),
                    Ok(Ok(response)) => response,
                };
            let length = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(length) = length
                && length > reach.max_body
            {
                return Err(Error::HttpResponseBodySize(Some(length)));
            }
            let max = reach.max_body;
            Ok(response
                .map(|body| body::Capped::new(body, max, deadline, open, permit).boxed_unsync()))
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match &result {
            Ok(response) => Outcome::of_status(response.status().as_u16()),
            Err(
                Error::HttpResponseTimeout
                | Error::ConnectionTimeout
                | Error::ConnectionLimitReached,
            ) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        self.metrics.outbound(outcome, seconds);
        if let Err(err) = &result {
            tracing::debug!(tenant = %self.tenant, plugin = %self.plugin, error = ?err, "outbound HTTP call failed");
        }
        result
    }

    /// Sends an admitted request and reads its whole answer (`http-client`), by its
    /// deadline, as a task of the main runtime (cancelled if the event is), as
    /// `wasi:http` requests run: so that a call from an event on the low-priority lane,
    /// whose runtime has no I/O driver, can connect, and so that the host's work for the
    /// call (connecting, TLS, HTTP) is not counted as the guest's compute. Running it in
    /// the event's own task instead measured no faster (S9, four alternating rounds).
    pub(crate) async fn send_whole(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        admitted: Admitted,
        open: Arc<OpenBodies>,
    ) -> Result<(http::response::Parts, bytes::Bytes), Error> {
        let Admitted {
            host,
            deadline,
            runtime,
        } = admitted;
        let call = async move {
            let response = self.send(request, host, deadline, open).await?;
            let (parts, body) = response.into_parts();
            // The body is capped and cut at the deadline as it is read (`body::Capped`).
            let body = body.collect().await?.to_bytes();
            Ok((parts, body))
        };
        AbortOnDropHandle::new(runtime.spawn(call))
            .await
            .map_err(|e| Error::InternalError(Some(format!("outbound call task: {e}"))))?
    }
}

/// A hyper client error as the `ErrorCode` the guest sees.
fn client_error(err: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return Error::ConnectionTimeout,
                std::io::ErrorKind::ConnectionRefused => return Error::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    return Error::ConnectionTerminated;
                }
                _ => {}
            }
        }
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return Error::TlsCertificateError;
        }
        let text = cause.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Error::DnsError {
                rcode: Some(text),
                info_code: None,
            };
        }
        source = cause.source();
    }
    if err.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::HttpProtocolError
    }
}

/// The wasi:http hooks of one instance's store.
pub struct Hooks {
    /// The plugin's grant.
    outbound: Arc<Outbound>,
    /// Response bodies of this store still open.
    pub open: Arc<OpenBodies>,
    /// When the current event's waits must end: no call outlives it.
    pub waits_until: Instant,
}

impl Hooks {
    /// Hooks for an instance of a plugin with the `outbound` grant.
    pub fn new(outbound: Arc<Outbound>) -> Hooks {
        Hooks {
            outbound,
            open: Arc::default(),
            waits_until: Instant::now(),
        }
    }
}

/// What `send_request` returns.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let outbound = self.outbound.clone();
        // The guest's own timeouts (request options) are ignored: ours bound the call.
        let Some(Admitted {
            host,
            deadline,
            runtime,
        }) = outbound.admit(request.method(), request.uri(), self.waits_until)
        else {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let open = self.open.clone();
        let task = runtime.spawn(outbound.send(request, host, deadline, open));
        Box::new(async move {
            let response = task
                .await
                .map_err(|e| Error::InternalError(Some(format!("outbound call task: {e}"))))??;
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}
