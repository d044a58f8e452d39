//! The serde structs of the config file and their defaults (each struct's `impl Default`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

/// The whole gateway configuration.
///
/// `tenants` is required, so this struct has no struct-level default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway listens.
    #[serde(default)]
    pub listen: Listen,
    /// Limits of the whole gateway, before a tenant is known.
    #[serde(default)]
    pub limits: GlobalLimits,
    /// How plugins are compiled.
    #[serde(default)]
    pub compile: CompileConfig,
    /// The admin listener's own limits.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Cluster mode: absent, the gateway is one node on its own.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// TLS on both listeners: absent, they speak plain HTTP and `ws://`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Reloads and draining.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// The tenants, by id. The id is the first path segment of their public URLs.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The directory relative plugin paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub file: PathBuf,
}

/// The admin listener's limits: whoever reaches its port must not be able to hold the
/// gateway's memory or file descriptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The management API's public `host:port`, as backends must call it: plugins read
    /// it as the config key `wsgate.domain_name` (the integration plugin's
    /// `requestContext.domainName`). By default the admin listener's bound address.
    pub domain_name: Option<String>,
    /// Operator keys: `Authorization: Bearer <key>` for what spans every tenant
    /// (`/metrics`). Each is `"key"` or `{ env = "VARIABLE" }`; none means `/metrics` is
    /// refused to everyone.
    pub bearer_keys: Vec<Secret>,
    /// Open admin connections; one past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a request head may take to arrive. It bounds an idle keep-alive
    /// connection too: the wait for its next request is a head read.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request body may take to arrive, once its credentials have passed.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Host names (without a port) by which backends reach the admin API, e.g. the name
    /// of the load balancer in front of it. When this or the calling tenant's `hosts`
    /// lists any name, a SigV4 signature must have been made for one of them, or for
    /// the address the request arrived at (`localhost` too on a loopback connection);
    /// a signature made for another host is refused.
    pub hosts: Vec<String>,
    /// Failed authentications a source address may make per minute, once its burst
    /// is spent; past it, every request from there gets 429 without its credentials
    /// being checked. An IPv6 source is its /64 network. Read at start-up.
    pub auth_failures_per_minute: u32,
    /// Failed authentications a source address may make at once before
    /// `auth_failures_per_minute` applies. Read at start-up.
    pub auth_failure_burst: u32,
    /// Source addresses whose failures are remembered at once; past it the least
    /// limited are forgotten first, so memory stays bounded whatever the number of
    /// attacking addresses. Read at start-up.
    pub auth_failure_sources: usize,
    /// Signed writes remembered against replays, per tenant, while they could still be
    /// replayed (their `x-amz-date` minute plus the 5-minute skew). When a tenant has
    /// this many, its new signed writes get 429 until the oldest minute expires, rather
    /// than being let through unprotected. Read at start-up.
    pub replay_cache_signatures: usize,
    /// Whether the admin listener serves the web console at `/ui/` (its pages hold no
    /// data: each call it makes is authenticated with the key the user signs in with).
    pub console: bool,
    /// The WebSocket listener's origin as browsers reach it (`wss://ws.example.com`),
    /// for the console's Try-it panel and the `connect-src` of its policy. By default
    /// the host the browser reached the admin listener by, at the WebSocket listener's
    /// port, `wss` with `[tls]`: set it behind a TLS-terminating proxy or a port mapping.
    pub console_websocket_origin: Option<String>,
    /// Each tenant's `hosts`, by tenant id. Not a key of the file: [`Config::parse`]
    /// fills it in, so that the admin listener, which sees this table and the
    /// credentials, knows which names a tenant's signatures may be made for.
    #[serde(skip)]
    pub tenant_hosts: BTreeMap<String, Vec<String>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            domain_name: None,
            bearer_keys: Vec::new(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            hosts: Vec::new(),
            auth_failures_per_minute: 300,
            auth_failure_burst: 20,
            auth_failure_sources: 65_536,
            replay_cache_signatures: 1_000_000,
            console: true,
            console_websocket_origin: None,
            tenant_hosts: BTreeMap::new(),
        }
    }
}

/// TLS for both listeners (`wss://` and `https://`), with rustls. The files are read
/// again at every reload, so a rotated certificate takes effect without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first; relative to the config file.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM; relative to the config file.
    pub key: PathBuf,
}

/// How the gateway changes under live traffic: reloads and draining.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// How long the connections of a route or tenant that a reload removed keep being
    /// served (by the plugins they had) before they are closed with 1001.
    #[serde(with = "humantime_serde")]
    pub reload_grace: Duration,
    /// On `SIGTERM`: how long the node keeps serving while `/ready` answers 503, so a
    /// load balancer moves new clients away, before it closes connections with 1001.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            reload_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
        }
    }
}

/// Cluster mode: nodes sharing one Redis act as one gateway. Read at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `{ env = "VARIABLE" }`. Required (an `Option` only so that its absence is
    /// reported by name).
    #[serde(default)]
    pub redis_url: Option<super::Secret>,
    /// This node's id (1 to 32 letters, digits, '-' or '_'); generated at start when
    /// absent. Every connection id names its node, so a send goes straight there.
    #[serde(default)]
    pub node_id: Option<String>,
    /// What every key and channel in Redis starts with, so clusters can share a Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long a node waits for another node's answer (then 503).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often a node renews its heartbeat.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node whose heartbeat is older than this is dead: its connections are swept.
    #[serde(default = "default_node_timeout", with = "humantime_serde")]
    pub node_timeout: Duration,
    /// How often each node looks for dead nodes. A dead node's connections are gone
    /// within `node_timeout + sweep_interval`.
    #[serde(default = "default_sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
}

fn default_key_prefix() -> String {
    "wsgate".into()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_node_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(5)
}

/// Listening addresses. Port 0 picks a free port; the bound addresses are printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The WebSocket listener (clients).
    pub ws: SocketAddr,
    /// The admin listener (management API, health, metrics).
    pub admin: SocketAddr,
    /// Addresses or networks (`10.0.0.0/8`) of the load balancers in front: only
    /// their connections may name the client, by `X-Forwarded-For` or a PROXY header.
    pub trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` to the WebSocket listener start with a
    /// PROXY protocol header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            ws: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

/// How plugins are compiled.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompileConfig {
    /// Keep compiled components on disk, keyed by content hash, so restarts skip
    /// compilation.
    pub cache: bool,
    /// Where (default `$XDG_CACHE_HOME/wsgate`, else `~/.cache/wsgate`). Only the
    /// gateway's user may write there: entries are loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// While loading, compile a function shared by several plugins (the standard
    /// library, the SDK) once. Only start-up and memory during it are affected.
    pub function_cache: bool,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            cache: true,
            cache_dir: None,
            function_cache: true,
        }
    }
}

impl CompileConfig {
    /// The cache directory in force, if caching is on.
    pub fn cache_dir(&self, base_dir: &Path) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        match &self.cache_dir {
            Some(dir) => Some(base_dir.join(dir)),
            None => default_cache_dir(),
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/wsgate` or `$HOME/.cache/wsgate`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("wsgate"))
}

/// Limits of the whole gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlobalLimits {
    /// Open WebSocket connections across all tenants; beyond it, HTTP 503 before the
    /// upgrade.
    pub max_connections: usize,
    /// Time a client has to send its whole upgrade request.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest upgrade request head (request line and headers); beyond it, HTTP 431.
    pub max_request_head_bytes: usize,
    /// Longest request URI; beyond it, HTTP 414.
    pub max_uri_bytes: usize,
    /// Wasm stack of every plugin call; deeper recursion traps.
    pub max_wasm_stack_bytes: usize,
    /// Open WebSocket connections (upgrades under way included) from one source
    /// address (an IPv6 /64); beyond it, HTTP 429 before the upgrade. Unset: none.
    pub max_connections_per_source: Option<usize>,
    /// New WebSocket connections per second from one source address, with a burst
    /// of as many; beyond it, HTTP 429 with `Retry-After`. Unset: none.
    pub new_connections_per_source: Option<u32>,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self {
            max_connections: 200_000,
            handshake_timeout: Duration::from_secs(10),
            max_request_head_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_wasm_stack_bytes: 512 * 1024,
            max_connections_per_source: None,
            new_connections_per_source: None,
        }
    }
}

/// One tenant: its routes, plugins, limits and management credentials.
///
/// `routes` is required, so this struct has no struct-level default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Host names that reach this tenant without the `/{tenant}` path prefix.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Client limits.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Plugins by name; routes refer to them by that name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Routes by path template (`/echo`, `/chat/{room}`, `/files/{rest+}`).
    pub routes: BTreeMap<String, RouteConfig>,
    /// Credentials of the management API.
    #[serde(default)]
    pub credentials: Credentials,
    /// Whether `GET @connections/{id}` shows the end user's credentials: the
    /// `Authorization`, `Proxy-Authorization` and `Cookie` headers and token-like query
    /// parameters. Off by default: they read `[redacted]`, since any holder of the
    /// tenant's management key could otherwise replay them. Plugins always see them.
    #[serde(default)]
    pub expose_credentials: bool,
}

/// Per-tenant limits on clients. Defaults follow AWS API Gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Largest message a client may send or be sent, in bytes (AWS: 128 KiB). Larger
    /// incoming messages close the connection with 1009.
    pub max_message_bytes: usize,
    /// Largest single frame a client may send, in bytes; a larger one closes with 1009.
    /// Defaults to `max_message_bytes`; smaller values bound what one read may buffer.
    pub max_frame_bytes: Option<usize>,
    /// Bytes queued for one client before sends to it are refused (`limit-exceeded`
    /// from the host API, 429 from the management API).
    pub outbound_queue_bytes: usize,
    /// A client whose socket accepts nothing for this long is a slow consumer and is
    /// dropped.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Open connections of the tenant; beyond it, HTTP 429 before the upgrade.
    pub max_connections: usize,
    /// Messages per second one connection may send; excess messages are dropped with
    /// an error frame. Unset: no limit, as on AWS (West Connectivity uses 5).
    pub message_rate: Option<u32>,
    /// Messages a connection may send at once above the rate (default: the rate). A
    /// client that keeps sending after its burst is spent, for as many messages again,
    /// is closed with 1008.
    pub message_burst: Option<u32>,
    /// Messages per second across all of the tenant's connections. Past it the
    /// tenant's readers slow down (TCP backpressure; nothing is dropped), so that one
    /// tenant cannot take the others' CPU. Unset: no quota (and nothing else shares
    /// the cores between tenants yet: set it on tenants that may flood).
    pub tenant_message_rate: Option<u32>,
    /// Messages the tenant may send at once above `tenant_message_rate` (default: the
    /// rate).
    pub tenant_message_burst: Option<u32>,
    /// Inbound message bytes per second across the tenant's connections, with a burst
    /// of one second's worth (at least one maximal message). Past it, as above.
    pub tenant_bytes_rate: Option<u32>,
    /// New connections per second across the tenant (AWS: 500 per second per
    /// account); beyond it, HTTP 429 with `Retry-After` before `$connect` runs. Unset:
    /// none.
    pub new_connections_per_second: Option<u32>,
    /// New connections the tenant may open at once above the rate (default: the rate).
    pub new_connections_burst: Option<u32>,
    /// A connection from which nothing arrives for this long is closed with 1001 (AWS:
    /// 10 minutes). Client pings count; pongs to the gateway's pings do not.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection older than this is closed with 1001 (AWS: 2 hours).
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// How often the gateway pings each client; a client that has not answered the
    /// previous ping by the next one is considered dead and dropped.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Long plugin events of this tenant that may run at once, across all its
    /// connections. An event that runs past one 1 ms epoch tick needs a permit to go
    /// on; without one it waits suspended (the wait counts toward its time budget).
    /// Short events never need one. It keeps one tenant's CPU-heavy plugins from
    /// holding every core. Default: half the cores, at least one.
    pub max_concurrent_events: usize,
    /// Plugin events of this tenant that may hold an instance at once, across its
    /// plugins; an event waits for a place within its time limit.
    pub max_instances: usize,
    /// Linear memory all of the tenant's plugin instances may hold together, running
    /// and pooled, in bytes. A growth past it traps (`kind=memory`).
    pub memory_bytes: usize,
    /// Browser origins allowed to connect (`Origin` header); empty allows any. Requests
    /// without an `Origin` (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Management API requests per second for the tenant (AWS's default: 10,000);
    /// beyond it, 429 `LimitExceededException`.
    pub api_rate: u32,
    /// Requests the tenant may send at once above the rate (AWS's default: 5,000).
    pub api_burst: u32,
    /// Entries the tenant's execution log keeps (its plugins' log lines, their
    /// failures, its management API audit trail; `GET /{tenant}/@logs`): the oldest
    /// make room past it. 1 to 1,000,000.
    pub execution_log_entries: usize,
    /// Bytes the tenant's execution log may hold; the oldest entries make room past it.
    /// From [`MIN_EXECUTION_LOG_BYTES`] to [`MAX_EXECUTION_LOG_BYTES`].
    pub execution_log_bytes: usize,
}

/// The smallest `execution_log_bytes`: room for several entries of the longest message.
pub const MIN_EXECUTION_LOG_BYTES: usize = 64 * 1024;
/// The largest `execution_log_bytes`: it is per tenant, and held in memory.
pub const MAX_EXECUTION_LOG_BYTES: usize = 1 << 30;
/// The largest `execution_log_entries`.
pub const MAX_EXECUTION_LOG_ENTRIES: usize = 1_000_000;

impl TenantLimits {
    /// The frame size cap in force.
    pub fn frame_bytes(&self) -> usize {
        self.max_frame_bytes.unwrap_or(self.max_message_bytes)
    }
}

impl Default for TenantLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_message_bytes: 128 * 1024,
            max_frame_bytes: None,
            outbound_queue_bytes: 1 << 20,
            write_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            message_rate: None,
            message_burst: None,
            tenant_message_rate: None,
            tenant_message_burst: None,
            tenant_bytes_rate: None,
            new_connections_per_second: None,
            new_connections_burst: None,
            idle_timeout: Duration::from_secs(600),
            max_connection_age: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            max_concurrent_events: (cores / 2).max(1),
            max_instances: 256,
            memory_bytes: 1 << 30,
            allowed_origins: Vec::new(),
            api_rate: 10_000,
            api_burst: 5_000,
            execution_log_entries: 10_000,
            execution_log_bytes: 4 << 20,
        }
    }
}

/// Management API credentials of a tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    /// Keys accepted as `Authorization: Bearer <key>`.
    pub bearer_keys: Vec<Secret>,
    /// AWS access keys accepted in SigV4 signatures.
    pub aws: Vec<AwsCredential>,
}

/// An AWS access key pair. Both keys are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredential {
    /// The access key id, e.g. `AKIDDEMO`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
}

/// A plugin: a component file plus its config, grants and limits.
///
/// `path` is required, so this struct has no struct-level default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.wasm` component, relative to the config file's directory.
    pub path: PathBuf,
    /// String key-values the plugin reads with the `config` host interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Which connections the plugin may reach through the host API.
    #[serde(default)]
    pub access: Access,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Origins the plugin may call over HTTP (`wasi:http`), as `scheme://host:port`
    /// (`*` for any port). None by default: a plugin reaches nothing.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// A PEM file of extra CA certificates the plugin's HTTPS calls trust besides the
    /// public roots, for internal services; relative to the config file's directory.
    #[serde(default)]
    pub outbound_ca_file: Option<PathBuf>,
}

#[cfg(test)]
impl PluginConfig {
    /// A plugin config with nothing granted, for unit tests.
    pub fn for_test() -> PluginConfig {
        PluginConfig {
            path: PathBuf::from("p.wasm"),
            config: BTreeMap::new(),
            access: Access::default(),
            limits: PluginLimits::default(),
            allowed_outbound_hosts: Vec::new(),
            outbound_ca_file: None,
        }
    }
}

/// What a plugin may reach through the `connections` host interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Every connection of its tenant (the default).
    #[default]
    Tenant,
    /// Only the connection whose event it is handling; `list` is forbidden.
    #[serde(rename = "self")]
    OwnConnection,
}

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one event; the guest is interrupted past it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle instances kept warm for reuse. As many as `max_instances` by default: a
    /// plugin waiting on a backend has as many events in flight as it has connections
    /// waiting, and each event past the pool pays for a new instance.
    pub pool_size: usize,
    /// An instance whose linear memory grew past this is dropped after its event
    /// rather than kept warm, so the pool never holds what one event grew it to.
    pub pool_memory_bytes: usize,
    /// Events of this plugin that may hold an instance at once; an event waits for a
    /// place within its time limit, then fails (`kind=instances`).
    pub max_instances: usize,
    /// Host calls (send, get-info, list, log, …, and each write to stdout or stderr)
    /// one event may make; the guest is stopped at the next one.
    pub max_host_calls: u32,
    /// Log bytes one event may write: the `log` import's lines and stdout and stderr
    /// lines together, as written (control characters escaped). Lines past it are
    /// dropped, and one warning after the event says how many. 0 drops them all.
    pub max_log_bytes: usize,
    /// Consecutive expensive failures (timeouts, memory limit) after which the plugin is
    /// suspended: its events fail at once, without running it.
    pub suspend_after: u32,
    /// How long a suspension lasts.
    #[serde(with = "humantime_serde")]
    pub suspend_for: Duration,
    /// How long an event may wait on HTTP calls in all (connecting, sending, the
    /// answer and its body, and a turn under `max_outbound_requests`). Waiting does not
    /// count against `timeout`, which is the guest's compute time. AWS's integration
    /// maximum, 29 s, by default.
    #[serde(with = "humantime_serde")]
    pub outbound_timeout: Duration,
    /// How long one HTTP call may take to connect (TCP and TLS).
    #[serde(with = "humantime_serde")]
    pub outbound_connect_timeout: Duration,
    /// HTTP calls of this plugin in flight at once; past it a call waits its turn
    /// within `outbound_timeout`.
    pub max_outbound_requests: usize,
    /// The largest HTTP response body the plugin may receive.
    pub max_outbound_body_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            timeout: Duration::from_millis(100),
            pool_size: 64,
            pool_memory_bytes: 4 << 20,
            max_instances: 64,
            max_host_calls: 100_000,
            max_log_bytes: 64 * 1024,
            suspend_after: 5,
            suspend_for: Duration::from_secs(10),
            outbound_timeout: Duration::from_secs(29),
            outbound_connect_timeout: Duration::from_secs(5),
            max_outbound_requests: 256,
            max_outbound_body_bytes: 4 << 20,
        }
    }
}

/// A route: which plugin handles which event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// The plugin for `$connect`, `$disconnect` and `$default` unless `keys` says
    /// otherwise.
    pub plugin: Option<String>,
    /// A route selection expression like AWS's, e.g. `$request.body.action`.
    pub selection: Option<String>,
    /// Route keys to plugin names: `$connect`, `$disconnect`, `$default`, or a value of
    /// the selection expression.
    pub keys: BTreeMap<String, String>,
}

/// The special route keys.
pub const CONNECT_KEY: &str = "$connect";
/// See [`CONNECT_KEY`].
pub const DISCONNECT_KEY: &str = "$disconnect";
/// See [`CONNECT_KEY`].
pub const DEFAULT_KEY: &str = "$default";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, error, parse};

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.listen.ws, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.listen.admin, "127.0.0.1:9090".parse().unwrap());
        let demo = &config.tenants["demo"];
        assert_eq!(demo.limits.max_message_bytes, 131072);
        let plugin = &demo.plugins["echo"];
        assert_eq!(plugin.limits.timeout, Duration::from_millis(100));
        assert_eq!(plugin.access, Access::Tenant);
    }

    /// Pins every default, as the removed `default_*` functions had them.
    #[test]
    fn every_default_is_as_documented() {
        let config = parse(&format!(
            "{MINIMAL}\n[listen]\n[limits]\n[compile]\n[tenants.demo.limits]\n[tenants.demo.credentials]\n[tenants.demo.plugins.echo.limits]\n"
        ))
        .unwrap();
        assert_eq!(config.listen.ws, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(
            config.listen.admin,
            SocketAddr::from(([127, 0, 0, 1], 9090))
        );
        let compile = &config.compile;
        assert!(compile.cache && compile.function_cache && compile.cache_dir.is_none());
        let global = &config.limits;
        assert_eq!(global.max_connections, 200_000);
        assert_eq!(global.handshake_timeout, Duration::from_secs(10));
        assert_eq!(global.max_request_head_bytes, 16 * 1024);
        assert_eq!(global.max_uri_bytes, 8 * 1024);
        assert_eq!(global.max_wasm_stack_bytes, 512 * 1024);
        let demo = &config.tenants["demo"];
        assert!(demo.hosts.is_empty());
        assert!(demo.credentials.bearer_keys.is_empty() && demo.credentials.aws.is_empty());
        let limits = &demo.limits;
        assert_eq!(limits.max_message_bytes, 128 * 1024);
        assert_eq!(limits.max_frame_bytes, None);
        assert_eq!(limits.frame_bytes(), 128 * 1024);
        assert_eq!(limits.outbound_queue_bytes, 1 << 20);
        assert_eq!(limits.write_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections, 100_000);
        assert_eq!((limits.message_rate, limits.message_burst), (None, None));
        assert_eq!(limits.idle_timeout, Duration::from_secs(600));
        assert_eq!(limits.max_connection_age, Duration::from_secs(7200));
        assert_eq!(limits.ping_interval, Duration::from_secs(30));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(limits.max_concurrent_events, (cores / 2).max(1));
        assert_eq!(limits.max_instances, 256);
        assert_eq!(limits.memory_bytes, 1 << 30);
        assert!(limits.allowed_origins.is_empty());
        assert_eq!((limits.api_rate, limits.api_burst), (10_000, 5_000));
        let plugin = &demo.plugins["echo"];
        assert!(plugin.config.is_empty());
        assert_eq!(plugin.access, Access::Tenant);
        let limits = &plugin.limits;
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.timeout, Duration::from_millis(100));
        assert_eq!(limits.pool_size, 64);
        assert_eq!(limits.pool_memory_bytes, 4 << 20);
        assert_eq!(limits.max_instances, 64);
        assert_eq!(limits.max_host_calls, 100_000);
        assert_eq!(limits.max_log_bytes, 64 * 1024);
        assert_eq!(limits.suspend_after, 5);
        assert_eq!(limits.suspend_for, Duration::from_secs(10));
        let route = &demo.routes["/echo"];
        assert!(route.selection.is_none() && route.keys.is_empty());
    }

    #[test]
    fn admin_defaults_are_as_documented() {
        let config = parse(&format!("{MINIMAL}\n[admin]\n")).unwrap();
        let admin = &config.admin;
        assert!(admin.bearer_keys.is_empty() && admin.hosts.is_empty());
        assert_eq!(admin.max_connections, 1024);
        assert_eq!(admin.header_timeout, Duration::from_secs(10));
        assert_eq!(admin.body_timeout, Duration::from_secs(10));
        assert_eq!(
            (admin.auth_failures_per_minute, admin.auth_failure_burst),
            (300, 20)
        );
        assert_eq!(admin.auth_failure_sources, 65_536);
        assert_eq!(admin.replay_cache_signatures, 1_000_000);
    }

    #[test]
    fn a_set_key_overrides_only_its_default() {
        let config = parse(&format!(
            "{MINIMAL}\n[tenants.demo.limits]\nidle_timeout = \"5s\"\n[listen]\nws = \"0.0.0.0:1\"\n"
        ))
        .unwrap();
        let limits = &config.tenants["demo"].limits;
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.ping_interval, Duration::from_secs(30));
        assert_eq!(config.listen.ws, SocketAddr::from(([0, 0, 0, 0], 1)));
        assert_eq!(
            config.listen.admin,
            SocketAddr::from(([127, 0, 0, 1], 9090))
        );
    }

    #[test]
    fn required_keys_stay_required() {
        let err = error("[listen]\n");
        assert!(err.contains("missing field `tenants`"), "{err}");
        let err = error("[tenants.demo]\nhosts = []\n");
        assert!(err.contains("missing field `routes`"), "{err}");
        let err = error(&format!("{MINIMAL}\n[tenants.demo.plugins.other]\n"));
        assert!(err.contains("missing field `path`"), "{err}");
        let err = error(&format!(
            "{MINIMAL}\n[[tenants.demo.credentials.aws]]\naccess_key_id = \"AKID\"\n"
        ));
        // A missing secret reaches `Secret`'s deserializer, which words it this way.
        assert!(err.contains("expected a string or { env"), "{err}");
        let err = error(&format!(
            "{MINIMAL}\n[[tenants.demo.credentials.aws]]\nsecret_access_key = \"s\"\n"
        ));
        assert!(err.contains("missing field `access_key_id`"), "{err}");
    }

    #[test]
    fn durations_and_access_parse() {
        let config = parse(
            r#"
            [tenants.demo.plugins.echo]
            path = "Cargo.toml"
            access = "self"
            limits = { timeout = "250ms", memory_bytes = 2097152 }
            [tenants.demo.routes."/echo"]
            plugin = "echo"
            "#,
        )
        .unwrap();
        let plugin = &config.tenants["demo"].plugins["echo"];
        assert_eq!(plugin.limits.timeout, Duration::from_millis(250));
        assert_eq!(plugin.access, Access::OwnConnection);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.limits]\nmax_mesage_bytes = 3\n"
        ));
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn toml_syntax_error_has_a_line() {
        let err = error("[tenants.demo\n");
        assert!(err.contains("line 1"), "{err}");
    }
}
