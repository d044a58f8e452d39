//! The TOML configuration: schema, defaults, and validation with file/key/reason errors.
//!
//! Every struct denies unknown keys, so a typo stops start-up instead of being ignored.
//! Relative plugin paths are resolved against the directory of the config file.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::routes::{self, SelectionExpression};

/// Why a configuration could not be used. Each variant names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("invalid config file {file}: {source}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// The parser's message, with line, column and key.
        source: Box<toml::de::Error>,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid config file {file}: `{key}`: {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The dotted key of the offending value, e.g. `tenants.demo.routes."/chat"`.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// The whole gateway configuration.
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
    /// The tenants, by id. The id is the first path segment of their public URLs.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The directory relative plugin paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub file: PathBuf,
}

/// Listening addresses. Port 0 picks a free port; the bound addresses are printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The WebSocket listener (clients).
    #[serde(default = "default_ws_addr")]
    pub ws: SocketAddr,
    /// The admin listener (management API, health, metrics).
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            ws: default_ws_addr(),
            admin: default_admin_addr(),
        }
    }
}

fn default_ws_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// How plugins are compiled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileConfig {
    /// Keep compiled components on disk, keyed by content hash, so restarts skip
    /// compilation.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// Where (default `$XDG_CACHE_HOME/wsgate`, else `~/.cache/wsgate`). Only the
    /// gateway's user may write there: entries are loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// While loading, compile a function shared by several plugins (the standard
    /// library, the SDK) once. Only start-up and memory during it are affected.
    #[serde(default = "default_true")]
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

fn default_true() -> bool {
    true
}

impl CompileConfig {
    /// The cache directory in force, if caching is on.
    pub fn cache_dir(&self, base_dir: &Path) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        match &self.cache_dir {
            Some(dir) => Some(base_dir.join(dir)),
            None => crate::plugin::default_cache_dir(),
        }
    }
}

/// Limits of the whole gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimits {
    /// Open WebSocket connections across all tenants; beyond it, HTTP 503 before the
    /// upgrade.
    #[serde(default = "default_global_connections")]
    pub max_connections: usize,
    /// Time a client has to send its whole upgrade request.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest upgrade request head (request line and headers); beyond it, HTTP 431.
    #[serde(default = "default_max_head_bytes")]
    pub max_request_head_bytes: usize,
    /// Longest request URI; beyond it, HTTP 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Wasm stack of every plugin call; deeper recursion traps.
    #[serde(default = "default_max_wasm_stack")]
    pub max_wasm_stack_bytes: usize,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self {
            max_connections: default_global_connections(),
            handshake_timeout: default_handshake_timeout(),
            max_request_head_bytes: default_max_head_bytes(),
            max_uri_bytes: default_max_uri_bytes(),
            max_wasm_stack_bytes: default_max_wasm_stack(),
        }
    }
}

fn default_global_connections() -> usize {
    200_000
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_head_bytes() -> usize {
    16 * 1024
}

fn default_max_uri_bytes() -> usize {
    8 * 1024
}

fn default_max_wasm_stack() -> usize {
    512 * 1024
}

/// One tenant: its routes, plugins, limits and management credentials.
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
}

/// Per-tenant limits on clients. Defaults follow AWS API Gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Largest message a client may send or be sent, in bytes (AWS: 128 KiB). Larger
    /// incoming messages close the connection with 1009.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Largest single frame a client may send, in bytes; a larger one closes with 1009.
    /// Defaults to `max_message_bytes`; smaller values bound what one read may buffer.
    pub max_frame_bytes: Option<usize>,
    /// Bytes queued for one client before sends to it are refused (`limit-exceeded`
    /// from the host API, 429 from the management API).
    #[serde(default = "default_outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,
    /// A client whose socket accepts nothing for this long is a slow consumer and is
    /// dropped.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Open connections of the tenant; beyond it, HTTP 429 before the upgrade.
    #[serde(default = "default_tenant_connections")]
    pub max_connections: usize,
    /// Messages per second one connection may send; excess messages are dropped with
    /// an error frame. Unset: no limit, as on AWS (West Connectivity uses 5).
    pub message_rate: Option<u32>,
    /// Messages a connection may send at once above the rate (default: the rate). A
    /// client that keeps sending after its burst is spent, for as many messages again,
    /// is closed with 1008.
    pub message_burst: Option<u32>,
    /// A connection from which nothing arrives for this long is closed with 1001 (AWS:
    /// 10 minutes). Client pings count; pongs to the gateway's pings do not.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection older than this is closed with 1001 (AWS: 2 hours).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// How often the gateway pings each client; a client that has not answered the
    /// previous ping by the next one is considered dead and dropped.
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Long plugin events of this tenant that may run at once, across all its
    /// connections. An event that runs past one 1 ms epoch tick needs a permit to go
    /// on; without one it waits suspended (the wait counts toward its time budget).
    /// Short events never need one. It keeps one tenant's CPU-heavy plugins from
    /// holding every core. Default: half the cores, at least one.
    #[serde(default = "default_concurrent_events")]
    pub max_concurrent_events: usize,
    /// Browser origins allowed to connect (`Origin` header); empty allows any. Requests
    /// without an `Origin` (non-browser clients) are always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Management API requests per second for the tenant (AWS's default: 10,000);
    /// beyond it, 429 `LimitExceededException`.
    #[serde(default = "default_api_rate")]
    pub api_rate: u32,
    /// Requests the tenant may send at once above the rate (AWS's default: 5,000).
    #[serde(default = "default_api_burst")]
    pub api_burst: u32,
}

impl TenantLimits {
    /// The frame size cap in force.
    pub fn frame_bytes(&self) -> usize {
        self.max_frame_bytes.unwrap_or(self.max_message_bytes)
    }
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            max_frame_bytes: None,
            outbound_queue_bytes: default_outbound_queue_bytes(),
            write_timeout: default_write_timeout(),
            max_connections: default_tenant_connections(),
            message_rate: None,
            message_burst: None,
            idle_timeout: default_idle_timeout(),
            max_connection_age: default_max_age(),
            ping_interval: default_ping_interval(),
            max_concurrent_events: default_concurrent_events(),
            allowed_origins: Vec::new(),
            api_rate: default_api_rate(),
            api_burst: default_api_burst(),
        }
    }
}

fn default_max_message_bytes() -> usize {
    128 * 1024
}

fn default_outbound_queue_bytes() -> usize {
    1 << 20
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_tenant_connections() -> usize {
    100_000
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_max_age() -> Duration {
    Duration::from_secs(7200)
}

fn default_concurrent_events() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).max(1)
}

fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_api_rate() -> u32 {
    10_000
}

fn default_api_burst() -> u32 {
    5_000
}

/// Management API credentials of a tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Keys accepted as `Authorization: Bearer <key>`.
    #[serde(default)]
    pub bearer_keys: Vec<Secret>,
    /// AWS access keys accepted in SigV4 signatures.
    #[serde(default)]
    pub aws: Vec<AwsCredential>,
}

/// An AWS access key pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredential {
    /// The access key id, e.g. `AKIDDEMO`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
}

/// A secret written in the file (`"text"`) or read from the environment when the
/// config is loaded (`{ env = "NAME" }`), so secrets need not live in the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Value(String),
            Env { env: String },
        }
        match Form::deserialize(de) {
            Ok(Form::Value(value)) if !value.is_empty() => Ok(Secret(value)),
            Ok(Form::Value(_)) => Err(serde::de::Error::custom("a secret may not be empty")),
            Ok(Form::Env { env }) => match std::env::var(&env) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                _ => Err(serde::de::Error::custom(format!(
                    "environment variable {env} is not set (or empty); set it or write the secret in the file"
                ))),
            },
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or { env = \"VARIABLE\" }",
            )),
        }
    }
}

/// A plugin: a component file plus its config, grants and limits.
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
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap per instance, in bytes.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: usize,
    /// Wall-clock budget of one event; the guest is interrupted past it.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle instances kept warm for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Host calls (send, get-info, list, log, …) one event may make; the guest is
    /// stopped at the next one.
    #[serde(default = "default_max_host_calls")]
    pub max_host_calls: u32,
    /// Consecutive expensive failures (timeouts, memory limit) after which the plugin is
    /// suspended: its events fail at once, without running it.
    #[serde(default = "default_suspend_after")]
    pub suspend_after: u32,
    /// How long a suspension lasts.
    #[serde(default = "default_suspend_for", with = "humantime_serde")]
    pub suspend_for: Duration,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes: default_memory_bytes(),
            timeout: default_timeout(),
            pool_size: default_pool_size(),
            max_host_calls: default_max_host_calls(),
            suspend_after: default_suspend_after(),
            suspend_for: default_suspend_for(),
        }
    }
}

fn default_memory_bytes() -> usize {
    16 << 20
}

fn default_timeout() -> Duration {
    Duration::from_millis(100)
}

fn default_pool_size() -> usize {
    16
}

fn default_max_host_calls() -> u32 {
    100_000
}

fn default_suspend_after() -> u32 {
    5
}

fn default_suspend_for() -> Duration {
    Duration::from_secs(10)
}

/// A route: which plugin handles which event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The plugin for `$connect`, `$disconnect` and `$default` unless `keys` says
    /// otherwise.
    pub plugin: Option<String>,
    /// A route selection expression like AWS's, e.g. `$request.body.action`.
    pub selection: Option<String>,
    /// Route keys to plugin names: `$connect`, `$disconnect`, `$default`, or a value of
    /// the selection expression.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// The special route keys.
pub const CONNECT_KEY: &str = "$connect";
/// See [`CONNECT_KEY`].
pub const DISCONNECT_KEY: &str = "$disconnect";
/// See [`CONNECT_KEY`].
pub const DEFAULT_KEY: &str = "$default";

/// Path prefixes a tenant id may not take, because the listeners serve them.
const RESERVED_TENANT_IDS: &[&str] = &["health", "metrics", "apigateways"];

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, file, &base_dir)
    }

    /// Parses and validates config text; `file` is used in messages, `base_dir` to
    /// resolve plugin paths.
    pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        config.file = file.to_owned();
        config.base_dir = base_dir.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// The absolute or working-directory-relative path of a plugin file.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.base_dir.join(&plugin.path)
    }

    /// A [`ConfigError::Invalid`] for this file.
    pub fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(self.invalid(
                "tenants",
                "no tenant is configured; add a [tenants.<id>] table",
            ));
        }
        let mut hosts = HashSet::new();
        let mut keys = HashSet::new();
        let mut access_keys = HashSet::new();
        for (id, tenant) in &self.tenants {
            let key = format!("tenants.{id}");
            if !valid_tenant_id(id) {
                return Err(self.invalid(
                    &key,
                    "a tenant id is 1 to 64 letters, digits, '-' or '_' (it is a URL path segment)",
                ));
            }
            if RESERVED_TENANT_IDS.contains(&id.as_str()) {
                return Err(self.invalid(
                    &key,
                    format!("`{id}` is reserved by the gateway's own paths; pick another id"),
                ));
            }
            for host in &tenant.hosts {
                if !hosts.insert(host.to_ascii_lowercase()) {
                    return Err(self.invalid(
                        format!("{key}.hosts"),
                        format!("host `{host}` is claimed by two tenants"),
                    ));
                }
            }
            for secret in &tenant.credentials.bearer_keys {
                if !keys.insert(secret.expose()) {
                    return Err(self.invalid(format!("{key}.credentials.bearer_keys"), "a bearer key is listed twice (keys identify their tenant, so each must be unique)"));
                }
            }
            for credential in &tenant.credentials.aws {
                if !access_keys.insert(credential.access_key_id.as_str()) {
                    return Err(self.invalid(
                        format!("{key}.credentials.aws"),
                        format!("access key id {} is listed twice (it identifies its tenant, so it must be unique)", credential.access_key_id),
                    ));
                }
            }
            self.validate_tenant(&key, tenant)?;
        }
        Ok(())
    }

    fn validate_tenant(&self, key: &str, tenant: &TenantConfig) -> Result<(), ConfigError> {
        let limits = &tenant.limits;
        if limits.max_message_bytes == 0 || limits.max_message_bytes > 16 << 20 {
            return Err(self.invalid(
                format!("{key}.limits.max_message_bytes"),
                "must be between 1 and 16777216 bytes",
            ));
        }
        if limits
            .max_frame_bytes
            .is_some_and(|f| f == 0 || f > limits.max_message_bytes)
        {
            return Err(self.invalid(
                format!("{key}.limits.max_frame_bytes"),
                "must be between 1 and max_message_bytes",
            ));
        }
        if limits.outbound_queue_bytes < limits.max_message_bytes {
            return Err(self.invalid(
                format!("{key}.limits.outbound_queue_bytes"),
                "must be at least max_message_bytes, or a maximum-size message could never be queued",
            ));
        }
        if limits.max_concurrent_events == 0 {
            return Err(self.invalid(
                format!("{key}.limits.max_concurrent_events"),
                "must be at least 1",
            ));
        }
        if limits.message_rate == Some(0) || limits.message_burst == Some(0) {
            return Err(self.invalid(
                format!("{key}.limits"),
                "message_rate and message_burst must be at least 1",
            ));
        }
        if limits.message_burst.is_some() && limits.message_rate.is_none() {
            return Err(self.invalid(
                format!("{key}.limits.message_burst"),
                "a burst needs a message_rate",
            ));
        }
        for (name, value) in [
            ("idle_timeout", limits.idle_timeout),
            ("max_connection_age", limits.max_connection_age),
            ("ping_interval", limits.ping_interval),
            ("write_timeout", limits.write_timeout),
        ] {
            if value.is_zero() {
                return Err(self.invalid(
                    format!("{key}.limits.{name}"),
                    "must be more than zero, e.g. \"30s\"",
                ));
            }
        }
        if limits.api_rate == 0 || limits.api_burst == 0 {
            return Err(self.invalid(
                format!("{key}.limits"),
                "api_rate and api_burst must be at least 1",
            ));
        }
        for (name, plugin) in &tenant.plugins {
            let pkey = format!("{key}.plugins.{name}");
            if plugin.limits.memory_bytes < 1 << 20 {
                return Err(self.invalid(
                    format!("{pkey}.limits.memory_bytes"),
                    "must be at least 1048576 (1 MiB)",
                ));
            }
            if plugin.limits.timeout.is_zero() {
                return Err(self.invalid(
                    format!("{pkey}.limits.timeout"),
                    "must be more than zero, e.g. \"100ms\"",
                ));
            }
            let path = self.plugin_path(plugin);
            if !path.is_file() {
                return Err(self.invalid(
                    format!("{pkey}.path"),
                    format!("plugin file {} does not exist; build the plugins first (scripts/build-plugins.sh)", path.display()),
                ));
            }
        }
        if tenant.routes.is_empty() {
            return Err(self.invalid(format!("{key}.routes"), "the tenant has no route"));
        }
        let mut table = routes::RouteTable::builder();
        for (path, route) in &tenant.routes {
            let rkey = format!("{key}.routes.\"{path}\"");
            table
                .insert(path, ())
                .map_err(|reason| self.invalid(&rkey, reason))?;
            if let Some(expr) = &route.selection {
                SelectionExpression::parse(expr)
                    .map_err(|reason| self.invalid(format!("{rkey}.selection"), reason))?;
            }
            if route.plugin.is_none() && route.keys.is_empty() {
                return Err(
                    self.invalid(&rkey, "the route names no plugin; set `plugin` or `keys`")
                );
            }
            let mut referenced: Vec<(String, &String)> = Vec::new();
            if let Some(plugin) = &route.plugin {
                referenced.push((format!("{rkey}.plugin"), plugin));
            }
            for (route_key, plugin) in &route.keys {
                let special = route_key.starts_with('$');
                if special
                    && ![CONNECT_KEY, DISCONNECT_KEY, DEFAULT_KEY].contains(&route_key.as_str())
                {
                    return Err(self.invalid(
                        format!("{rkey}.keys.\"{route_key}\""),
                        "unknown special key; the special keys are $connect, $disconnect and $default",
                    ));
                }
                if !special && route.selection.is_none() {
                    return Err(self.invalid(
                        format!("{rkey}.keys.\"{route_key}\""),
                        "a custom route key needs a `selection` expression such as \"$request.body.action\"",
                    ));
                }
                referenced.push((format!("{rkey}.keys.\"{route_key}\""), plugin));
            }
            for (ref_key, plugin) in referenced {
                if !tenant.plugins.contains_key(plugin) {
                    return Err(self.invalid(
                        ref_key,
                        format!(
                            "no plugin `{plugin}` in this tenant; define it under {key}.plugins"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        // Cargo.toml exists in the package directory and stands in for a plugin file.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(text, Path::new("test.toml"), base)
    }

    fn error(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    const MINIMAL: &str = r#"
        [tenants.demo.plugins.echo]
        path = "Cargo.toml"
        [tenants.demo.routes."/echo"]
        plugin = "echo"
    "#;

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

    #[test]
    fn duplicate_route_is_refused() {
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.routes.\"/{{x}}\"]\nplugin = \"echo\"\n[tenants.demo.routes.\"/{{y}}\"]\nplugin = \"echo\"\n"
        ));
        assert!(err.contains("tenants.demo.routes.\"/{y}\""), "{err}");
        assert!(err.contains("conflicts"), "{err}");
    }

    #[test]
    fn missing_plugin_file_is_named() {
        let err = error(
            r#"
            [tenants.demo.plugins.echo]
            path = "no-such.wasm"
            [tenants.demo.routes."/echo"]
            plugin = "echo"
            "#,
        );
        assert!(err.contains("tenants.demo.plugins.echo.path"), "{err}");
        assert!(err.contains("no-such.wasm"), "{err}");
    }

    #[test]
    fn unknown_plugin_reference_is_named() {
        let err = error(
            r#"
            [tenants.demo.routes."/echo"]
            plugin = "nope"
            "#,
        );
        assert!(
            err.contains("tenants.demo.routes.\"/echo\".plugin"),
            "{err}"
        );
        assert!(err.contains("no plugin `nope`"), "{err}");
    }

    #[test]
    fn custom_key_needs_selection() {
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.routes.\"/game\"]\nkeys = {{ join = \"echo\" }}\n"
        ));
        assert!(err.contains("needs a `selection`"), "{err}");
    }

    #[test]
    fn bad_selection_expression_is_named() {
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.routes.\"/game\"]\nplugin = \"echo\"\nselection = \"$request.header.x\"\n"
        ));
        assert!(err.contains("selection"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_file_or_the_environment() {
        // SAFETY: tests in this module touch only this variable.
        unsafe { std::env::set_var("WSGATE_TEST_SECRET", "from-env") };
        let config = parse(&format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [\"k1\", {{ env = \"WSGATE_TEST_SECRET\" }}]\n"
        ))
        .unwrap();
        let keys: Vec<_> = config.tenants["demo"]
            .credentials
            .bearer_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k1", "from-env"]);
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [{{ env = \"WSGATE_TEST_UNSET\" }}]\n"
        ));
        assert!(err.contains("WSGATE_TEST_UNSET is not set"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_key_may_open_one_tenant_only() {
        let two = format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [\"k\"]\n{}\n[tenants.acme.credentials]\nbearer_keys = [\"k\"]\n",
            MINIMAL.replace("demo", "acme")
        );
        assert!(error(&two).contains("listed twice"));
    }

    #[test]
    fn reserved_and_malformed_tenant_ids_are_refused() {
        let err = error(&MINIMAL.replace("demo", "health"));
        assert!(err.contains("reserved"), "{err}");
        let err = error(&MINIMAL.replace("demo", "\"a/b\""));
        assert!(err.contains("tenant id"), "{err}");
    }
}
