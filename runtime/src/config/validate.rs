//! The checks serde cannot express, reported as file/key/reason [`ConfigError::Invalid`] errors.

use std::collections::HashSet;

use super::{CONNECT_KEY, Config, ConfigError, DEFAULT_KEY, DISCONNECT_KEY, Origin, TenantConfig};
use crate::routes::{self, SelectionExpression};

/// Path prefixes a tenant id may not take, because the listeners serve them (`-` holds
/// the operator's endpoints: `/-/reload`, `/-/drain`).
const RESERVED_TENANT_IDS: &[&str] = &["health", "ready", "metrics", "apigateways", "-"];

/// The longest an event may wait on HTTP calls: it holds its instance meanwhile.
const MAX_OUTBOUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Plugin config keys under this prefix are the gateway's (`wsgate.domain_name`).
pub const RESERVED_CONFIG_PREFIX: &str = "wsgate.";

impl Config {
    /// The `[cluster]` section: a usable Redis URL, a node id fit for connection ids,
    /// and timings that let a live node keep its heartbeat.
    fn validate_cluster(&self, problems: &mut Vec<ConfigError>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        match &cluster.redis_url {
            None => problems.push(self.invalid(
                "cluster.redis_url",
                "missing: cluster mode needs the shared Redis, e.g. redis_url = \"redis://127.0.0.1:6379\"",
            )),
            Some(url) => {
                if let Err(err) = redis::Client::open(url.expose()) {
                    problems.push(self.invalid(
                        "cluster.redis_url",
                        format!("not a usable Redis URL ({err}); write e.g. \"redis://127.0.0.1:6379\" or \"rediss://user:password@host:6380/0\""),
                    ));
                }
            }
        }
        if let Some(node) = &cluster.node_id
            && !crate::cluster::valid_node_id(node)
        {
            problems.push(self.invalid(
                "cluster.node_id",
                format!("{node:?}: a node id is 1 to 32 letters, digits, '-' or '_' (it ends every connection id of the node)"),
            ));
        }
        if cluster.key_prefix.is_empty()
            || cluster.key_prefix.len() > 64
            || cluster
                .key_prefix
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            problems.push(self.invalid(
                "cluster.key_prefix",
                "1 to 64 characters without spaces, e.g. \"wsgate\"",
            ));
        }
        for (name, value) in [
            ("request_timeout", cluster.request_timeout),
            ("heartbeat_interval", cluster.heartbeat_interval),
            ("node_timeout", cluster.node_timeout),
            ("sweep_interval", cluster.sweep_interval),
        ] {
            if value < std::time::Duration::from_millis(10) {
                problems.push(self.invalid(
                    format!("cluster.{name}"),
                    "must be at least 10ms, e.g. \"2s\"",
                ));
            }
        }
        if cluster.node_timeout < cluster.heartbeat_interval * 3 {
            problems.push(self.invalid(
                "cluster.node_timeout",
                format!(
                    "{:?} is less than three heartbeats ({:?} each): a live node would be taken for dead; raise it or shorten cluster.heartbeat_interval",
                    cluster.node_timeout, cluster.heartbeat_interval
                ),
            ));
        }
    }

    /// Checks what serde cannot: ids, uniqueness, ranges, files and references. Returns
    /// every problem, in the order of the checks, so that the first is the one start-up
    /// reports (`Config::load`) and `wsgate check` can list them all.
    pub(super) fn validate(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if self.tenants.is_empty() {
            problems.push(self.invalid(
                "tenants",
                "no tenant is configured; add a [tenants.<id>] table",
            ));
        }
        if self.admin.max_connections == 0 {
            problems.push(self.invalid("admin.max_connections", "must be at least 1"));
        }
        if let Err(why) = crate::proxy::TrustedProxies::parse(&self.listen.trusted_proxies) {
            problems.push(self.invalid("listen.trusted_proxies", why));
        }
        if self.listen.proxy_protocol && self.listen.trusted_proxies.is_empty() {
            problems.push(self.invalid(
                "listen.proxy_protocol",
                "a PROXY header is read only from trusted_proxies: list your load balancers' addresses in listen.trusted_proxies",
            ));
        }
        if self.limits.max_connections_per_source == Some(0)
            || self.limits.new_connections_per_source == Some(0)
        {
            problems.push(self.invalid(
                "limits",
                "max_connections_per_source and new_connections_per_source must be at least 1 (leave them out for no limit)",
            ));
        }
        for (name, value) in [
            ("header_timeout", self.admin.header_timeout),
            ("body_timeout", self.admin.body_timeout),
        ] {
            if value.is_zero() {
                problems.push(self.invalid(
                    format!("admin.{name}"),
                    "must be more than zero, e.g. \"10s\"",
                ));
            }
        }
        for (name, value) in [
            (
                "auth_failures_per_minute",
                self.admin.auth_failures_per_minute as usize,
            ),
            ("auth_failure_burst", self.admin.auth_failure_burst as usize),
            ("auth_failure_sources", self.admin.auth_failure_sources),
            (
                "replay_cache_signatures",
                self.admin.replay_cache_signatures,
            ),
        ] {
            if value == 0 {
                problems.push(self.invalid(format!("admin.{name}"), "must be at least 1"));
            }
        }
        for host in &self.admin.hosts {
            if !valid_host_name(host) {
                problems.push(self.invalid(
                    "admin.hosts",
                    format!("`{host}` is not a host name: write the name alone, without a scheme, port or path (e.g. \"api.example.com\"; ports are not compared)"),
                ));
            }
        }
        if let Some(origin) = &self.admin.console_websocket_origin
            && websocket_origin(origin).is_none()
        {
            problems.push(self.invalid(
                "admin.console_websocket_origin",
                format!("`{origin}` is not a WebSocket origin: write the scheme, host and optional port only, e.g. \"wss://ws.example.com\" or \"ws://10.0.0.5:8080\""),
            ));
        }
        self.validate_cluster(&mut problems);
        let mut hosts = HashSet::new();
        let mut keys = HashSet::new();
        for secret in &self.admin.bearer_keys {
            if secret.expose().is_empty() || !keys.insert(secret.expose()) {
                problems.push(self.invalid(
                    "admin.bearer_keys",
                    "an operator key is empty or listed twice",
                ));
            }
        }
        let mut access_keys = HashSet::new();
        for (id, tenant) in &self.tenants {
            let key = format!("tenants.{id}");
            if !valid_tenant_id(id) {
                problems.push(self.invalid(
                    &key,
                    "a tenant id is 1 to 64 letters, digits, '-' or '_' (it is a URL path segment)",
                ));
            }
            if RESERVED_TENANT_IDS.contains(&id.as_str()) {
                problems.push(self.invalid(
                    &key,
                    format!("`{id}` is reserved by the gateway's own paths; pick another id"),
                ));
            }
            for host in &tenant.hosts {
                if !hosts.insert(host.to_ascii_lowercase()) {
                    problems.push(self.invalid(
                        format!("{key}.hosts"),
                        format!("host `{host}` is claimed by two tenants"),
                    ));
                }
            }
            for secret in &tenant.credentials.bearer_keys {
                if !keys.insert(secret.expose()) {
                    problems.push(self.invalid(format!("{key}.credentials.bearer_keys"), "a bearer key is listed twice, or is also an operator key (keys identify their tenant, so each must be unique)"));
                }
            }
            for credential in &tenant.credentials.aws {
                if !access_keys.insert(credential.access_key_id.as_str()) {
                    problems.push(self.invalid(
                        format!("{key}.credentials.aws"),
                        format!("access key id {} is listed twice (it identifies its tenant, so it must be unique)", credential.access_key_id),
                    ));
                }
            }
            self.validate_tenant(&key, tenant, &mut problems);
        }
        problems
    }

    fn validate_tenant(&self, key: &str, tenant: &TenantConfig, problems: &mut Vec<ConfigError>) {
        let limits = &tenant.limits;
        if limits.max_message_bytes == 0 || limits.max_message_bytes > 16 << 20 {
            problems.push(self.invalid(
                format!("{key}.limits.max_message_bytes"),
                "must be between 1 and 16777216 bytes",
            ));
        }
        if limits
            .max_frame_bytes
            .is_some_and(|f| f == 0 || f > limits.max_message_bytes)
        {
            problems.push(self.invalid(
                format!("{key}.limits.max_frame_bytes"),
                "must be between 1 and max_message_bytes",
            ));
        }
        if limits.outbound_queue_bytes < limits.max_message_bytes {
            problems.push(self.invalid(
                format!("{key}.limits.outbound_queue_bytes"),
                "must be at least max_message_bytes, or a maximum-size message could never be queued",
            ));
        }
        if limits.max_concurrent_events == 0 {
            problems.push(self.invalid(
                format!("{key}.limits.max_concurrent_events"),
                "must be at least 1",
            ));
        }
        if limits.max_instances == 0 {
            problems
                .push(self.invalid(format!("{key}.limits.max_instances"), "must be at least 1"));
        }
        if limits.message_rate == Some(0) || limits.message_burst == Some(0) {
            problems.push(self.invalid(
                format!("{key}.limits"),
                "message_rate and message_burst must be at least 1",
            ));
        }
        if limits.message_burst.is_some() && limits.message_rate.is_none() {
            problems.push(self.invalid(
                format!("{key}.limits.message_burst"),
                "a burst needs a message_rate",
            ));
        }
        for (name, value) in [
            ("tenant_message_rate", limits.tenant_message_rate),
            ("tenant_message_burst", limits.tenant_message_burst),
            ("tenant_bytes_rate", limits.tenant_bytes_rate),
            (
                "new_connections_per_second",
                limits.new_connections_per_second,
            ),
            ("new_connections_burst", limits.new_connections_burst),
        ] {
            if value == Some(0) {
                problems.push(self.invalid(
                    format!("{key}.limits.{name}"),
                    "must be at least 1 (leave it out for no quota)",
                ));
            }
        }
        if limits.tenant_message_burst.is_some() && limits.tenant_message_rate.is_none() {
            problems.push(self.invalid(
                format!("{key}.limits.tenant_message_burst"),
                "a burst needs a tenant_message_rate",
            ));
        }
        for (name, value) in [
            ("idle_timeout", limits.idle_timeout),
            ("max_connection_age", limits.max_connection_age),
            ("ping_interval", limits.ping_interval),
            ("write_timeout", limits.write_timeout),
        ] {
            if value.is_zero() {
                problems.push(self.invalid(
                    format!("{key}.limits.{name}"),
                    "must be more than zero, e.g. \"30s\"",
                ));
            }
        }
        if limits.api_rate == 0 || limits.api_burst == 0 {
            problems.push(self.invalid(
                format!("{key}.limits"),
                "api_rate and api_burst must be at least 1",
            ));
        }
        if !(1..=super::MAX_EXECUTION_LOG_ENTRIES).contains(&limits.execution_log_entries) {
            problems.push(self.invalid(
                format!("{key}.limits.execution_log_entries"),
                format!("must be between 1 and {}", super::MAX_EXECUTION_LOG_ENTRIES),
            ));
        }
        if !(super::MIN_EXECUTION_LOG_BYTES..=super::MAX_EXECUTION_LOG_BYTES)
            .contains(&limits.execution_log_bytes)
        {
            problems.push(self.invalid(
                format!("{key}.limits.execution_log_bytes"),
                format!(
                    "must be between {} (64 KiB: room for several of the longest entries) and {} (1 GiB) bytes",
                    super::MIN_EXECUTION_LOG_BYTES,
                    super::MAX_EXECUTION_LOG_BYTES
                ),
            ));
        }
        for (name, plugin) in &tenant.plugins {
            let pkey = format!("{key}.plugins.{name}");
            if plugin.limits.memory_bytes < 1 << 20 {
                problems.push(self.invalid(
                    format!("{pkey}.limits.memory_bytes"),
                    "must be at least 1048576 (1 MiB)",
                ));
            }
            if plugin.limits.memory_bytes > limits.memory_bytes {
                problems.push(self.invalid(
                    format!("{pkey}.limits.memory_bytes"),
                    format!(
                        "is more than the tenant's whole memory budget ({key}.limits.memory_bytes = {}): one instance could never reach it",
                        limits.memory_bytes
                    ),
                ));
            }
            if plugin.limits.max_instances == 0 {
                problems.push(
                    self.invalid(format!("{pkey}.limits.max_instances"), "must be at least 1"),
                );
            }
            if plugin.limits.max_log_bytes > MAX_LOG_BYTES {
                problems.push(self.invalid(
                    format!("{pkey}.limits.max_log_bytes"),
                    format!("must be at most {MAX_LOG_BYTES} (16 MiB): it is per event, and every event of the plugin may spend it"),
                ));
            }
            if plugin.limits.timeout.is_zero() {
                problems.push(self.invalid(
                    format!("{pkey}.limits.timeout"),
                    "must be more than zero, e.g. \"100ms\"",
                ));
            }
            for key in plugin
                .config
                .keys()
                .filter(|k| k.starts_with(RESERVED_CONFIG_PREFIX))
            {
                problems.push(self.invalid(
                    format!("{pkey}.config.{key}"),
                    format!("keys starting with {RESERVED_CONFIG_PREFIX:?} are the gateway's own; choose another name"),
                ));
            }
            for (i, origin) in plugin.allowed_outbound_hosts.iter().enumerate() {
                if let Err(reason) = Origin::parse(origin) {
                    problems
                        .push(self.invalid(format!("{pkey}.allowed_outbound_hosts[{i}]"), reason));
                }
            }
            if let Some(file) = &plugin.outbound_ca_file
                && !self.base_dir.join(file).is_file()
            {
                problems.push(self.invalid(
                    format!("{pkey}.outbound_ca_file"),
                    format!(
                        "{} is not a file; give a PEM file of CA certificates",
                        self.base_dir.join(file).display()
                    ),
                ));
            }
            let outbound = &plugin.limits;
            if outbound.outbound_timeout.is_zero() || outbound.outbound_connect_timeout.is_zero() {
                problems.push(self.invalid(
                    format!("{pkey}.limits"),
                    "outbound_timeout and outbound_connect_timeout must be more than zero, e.g. \"5s\"",
                ));
            }
            if outbound.outbound_timeout > MAX_OUTBOUND_TIMEOUT {
                problems.push(self.invalid(
                    format!("{pkey}.limits.outbound_timeout"),
                    "must be at most 15m: an event holds its instance while it waits",
                ));
            }
            if outbound.max_outbound_requests == 0 {
                problems.push(self.invalid(
                    format!("{pkey}.limits.max_outbound_requests"),
                    "must be at least 1",
                ));
            }
            if !plugin.allowed_outbound_hosts.is_empty()
                && outbound.max_outbound_body_bytes > plugin.limits.memory_bytes
            {
                problems.push(self.invalid(
                    format!("{pkey}.limits.max_outbound_body_bytes"),
                    format!("is more than the plugin's memory_bytes ({}): the body is read into the instance's memory", plugin.limits.memory_bytes),
                ));
            }
            let path = self.plugin_path(plugin);
            if !path.is_file() {
                problems.push(self.invalid(
                    format!("{pkey}.path"),
                    format!("plugin file {} does not exist; build the plugins first (scripts/build-plugins.sh)", path.display()),
                ));
            }
        }
        if tenant.routes.is_empty() {
            problems.push(self.invalid(format!("{key}.routes"), "the tenant has no route"));
        }
        let mut table = routes::RouteTable::builder();
        for (path, route) in &tenant.routes {
            let rkey = format!("{key}.routes.\"{path}\"");
            if let Err(reason) = table.insert(path, ()) {
                problems.push(self.invalid(&rkey, reason));
            }
            if let Some(expr) = &route.selection
                && let Err(reason) = SelectionExpression::parse(expr)
            {
                problems.push(self.invalid(format!("{rkey}.selection"), reason));
            }
            if route.plugin.is_none() && route.keys.is_empty() {
                problems
                    .push(self.invalid(&rkey, "the route names no plugin; set `plugin` or `keys`"));
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
                    problems.push(self.invalid(
                        format!("{rkey}.keys.\"{route_key}\""),
                        "unknown special key; the special keys are $connect, $disconnect and $default",
                    ));
                }
                if !special && route.selection.is_none() {
                    problems.push(self.invalid(
                        format!("{rkey}.keys.\"{route_key}\""),
                        "a custom route key needs a `selection` expression such as \"$request.body.action\"",
                    ));
                }
                referenced.push((format!("{rkey}.keys.\"{route_key}\""), plugin));
            }
            for (ref_key, plugin) in referenced {
                if !tenant.plugins.contains_key(plugin) {
                    problems.push(self.invalid(
                        ref_key,
                        format!(
                            "no plugin `{plugin}` in this tenant; define it under {key}.plugins"
                        ),
                    ));
                }
            }
        }
    }
}

/// Whether `host` is a plain DNS name or IPv4 address (letters, digits, `-`, `.`, at
/// most 253) or a bracketed IPv6 address: safe to put in a header as it is.
pub fn plain_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `origin` as `ws[s]://host[:port]` (scheme in lower case), if it is a WebSocket origin
/// and nothing more: it goes into the console's `Content-Security-Policy` header.
pub fn websocket_origin(origin: &str) -> Option<String> {
    let uri: http::Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host();
    // `http::Uri` lets through characters (`;`, `,`, `'`, `*`) that mean something in
    // a policy header: the host must be a plain name or an address, the port a number.
    let plain_host = plain_host(host);
    let exact = match authority.port_u16() {
        Some(port) => authority.as_str() == format!("{host}:{port}"),
        None => authority.as_str() == host,
    };
    let plain = matches!(scheme.as_str(), "ws" | "wss")
        && plain_host
        && exact
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none();
    plain.then(|| format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// A host name or IP address as a SigV4 `host` header names it, without a port: an
/// IPv6 address in brackets.
fn valid_host_name(host: &str) -> bool {
    let bracketed = host.starts_with('[') && host.ends_with(']');
    !host.is_empty()
        && host.len() <= 253
        && (bracketed || !host.contains(':'))
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// The largest `max_log_bytes` a plugin may have.
const MAX_LOG_BYTES: usize = 16 << 20;

fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::websocket_origin;
    use crate::config::testing::{MINIMAL, error, parse};

    /// A bad `[cluster]` stops start-up naming the key; a good one gets its defaults.
    #[test]
    fn cluster_settings_are_checked() {
        let cluster = |lines: &str| format!("{MINIMAL}\n[cluster]\n{lines}\n");
        let config = parse(&cluster("redis_url = \"redis://127.0.0.1:6379\"")).unwrap();
        let settings = config.cluster.expect("cluster mode");
        assert_eq!(settings.node_id, None);
        assert_eq!(settings.key_prefix, "wsgate");
        assert_eq!(settings.request_timeout, std::time::Duration::from_secs(2));
        assert_eq!(settings.node_timeout, std::time::Duration::from_secs(10));
        for (lines, key, says) in [
            ("redis_url = \"http://x\"", "cluster.redis_url", "Redis URL"),
            (
                "redis_url = \"redis://h\"\nnode_id = \"a.b\"",
                "cluster.node_id",
                "letters",
            ),
            (
                "redis_url = \"redis://h\"\nkey_prefix = \"has space\"",
                "cluster.key_prefix",
                "without spaces",
            ),
            (
                "redis_url = \"redis://h\"\nrequest_timeout = \"0s\"",
                "cluster.request_timeout",
                "at least 10ms",
            ),
            (
                "redis_url = \"redis://h\"\nheartbeat_interval = \"5s\"\nnode_timeout = \"10s\"",
                "cluster.node_timeout",
                "three heartbeats",
            ),
            ("node_id = \"a\"", "redis_url", "missing"),
        ] {
            let err = error(&cluster(lines));
            assert!(err.contains(key) && err.contains(says), "{lines}: {err}");
        }
    }

    #[test]
    fn duplicate_route_is_refused() {
        let err = error(&format!(
            "{MINIMAL}\n[tenants.demo.routes.\"/{{x}}\"]\nplugin = \"echo\"\n[tenants.demo.routes.\"/{{y}}\"]\nplugin = \"echo\"\n"
        ));
        assert!(err.contains("tenants.demo.routes.\"/{y}\""), "{err}");
        assert!(err.contains("conflicts"), "{err}");
    }

    /// A plugin's log cap is bounded above; 0 (no plugin lines at all) is allowed.
    #[test]
    fn outbound_grants_and_limits_are_checked() {
        let plugin = |lines: &str| {
            format!("{MINIMAL}\n[tenants.demo.plugins.out]\npath = \"Cargo.toml\"\n{lines}\n")
        };
        let err = error(&plugin(
            "allowed_outbound_hosts = [\"http://a.test:80\", \"http://user@b.test\"]",
        ));
        assert!(
            err.contains("tenants.demo.plugins.out.allowed_outbound_hosts[1]")
                && err.contains("userinfo"),
            "{err}"
        );
        let err = error(&plugin("config = { \"wsgate.domain_name\" = \"x\" }"));
        assert!(err.contains("config.wsgate.domain_name"), "{err}");
        let err = error(&plugin(
            "allowed_outbound_hosts = [\"http://a.test\"]\nlimits = { max_outbound_body_bytes = 33554432 }",
        ));
        assert!(err.contains("limits.max_outbound_body_bytes"), "{err}");
        let err = error(&plugin("limits = { outbound_timeout = \"16m\" }"));
        assert!(err.contains("limits.outbound_timeout"), "{err}");
        let err = error(&plugin("outbound_ca_file = \"missing.pem\""));
        assert!(err.contains("outbound_ca_file"), "{err}");
    }

    #[test]
    fn max_log_bytes_is_bounded() {
        let limits = |bytes: usize| {
            format!("{MINIMAL}\n[tenants.demo.plugins.echo.limits]\nmax_log_bytes = {bytes}\n")
        };
        let err = error(&limits((16 << 20) + 1));
        assert!(
            err.contains("tenants.demo.plugins.echo.limits.max_log_bytes")
                && err.contains("at most 16777216"),
            "{err}"
        );
        for bytes in [0, 16 << 20] {
            let config = crate::config::testing::parse(&limits(bytes)).unwrap();
            assert_eq!(
                config.tenants["demo"].plugins["echo"].limits.max_log_bytes,
                bytes
            );
        }
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
    fn a_key_may_open_one_tenant_only() {
        let two = format!(
            "{MINIMAL}\n[tenants.demo.credentials]\nbearer_keys = [\"k\"]\n{}\n[tenants.acme.credentials]\nbearer_keys = [\"k\"]\n",
            MINIMAL.replace("demo", "acme")
        );
        assert!(error(&two).contains("listed twice"));
    }

    #[test]
    fn a_console_websocket_origin_is_an_origin_only() {
        assert_eq!(
            websocket_origin("WSS://ws.example.com:8443/").as_deref(),
            Some("wss://ws.example.com:8443")
        );
        assert_eq!(
            websocket_origin("ws://[::1]:8080").as_deref(),
            Some("ws://[::1]:8080")
        );
        for bad in [
            "https://ws.example.com",
            "ws.example.com",
            "wss://ws.example.com/path",
            "wss://ws.example.com?x=1",
            "wss://user@ws.example.com",
            "wss://ws.example.com; script-src *",
            "wss://ws.example.com;script-src",
            "wss://a,b",
            "wss://h:abc",
            "wss://h:",
            "wss://h:99999",
            "wss://h'x",
            "wss://",
        ] {
            assert_eq!(websocket_origin(bad), None, "{bad}");
            let err = error(&format!(
                "{MINIMAL}\n[admin]\nconsole_websocket_origin = {bad:?}\n"
            ));
            assert!(
                err.contains("admin.console_websocket_origin"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn admin_hosts_and_auth_limits_are_checked() {
        for (line, expected) in [
            ("hosts = [\"https://api.example.com\"]", "admin.hosts"),
            (
                "hosts = [\"api.example.com:9090\"]",
                "without a scheme, port",
            ),
            (
                "auth_failures_per_minute = 0",
                "admin.auth_failures_per_minute",
            ),
            ("auth_failure_sources = 0", "admin.auth_failure_sources"),
            (
                "replay_cache_signatures = 0",
                "admin.replay_cache_signatures",
            ),
        ] {
            let err = error(&format!("{MINIMAL}\n[admin]\n{line}\n"));
            assert!(err.contains(expected), "{line}: {err}");
        }
        let config = crate::config::testing::parse(&format!(
            "{MINIMAL}\n[admin]\nhosts = [\"api.example.com\", \"[::1]\"]\n[tenants.demo]\nhosts = [\"demo.example.com\"]\n"
        ))
        .unwrap();
        assert_eq!(
            config.admin.tenant_hosts["demo"],
            ["demo.example.com".to_owned()]
        );
    }

    /// Validation goes on past a problem: independent problems across sections,
    /// tenants, plugins and routes are all reported, in the order of the checks, and
    /// `parse` refuses the config with the first of them.
    #[test]
    fn every_problem_is_reported() {
        let text = r#"
            [admin]
            max_connections = 0
            [tenants.demo.plugins.echo]
            path = "Cargo.toml"
            [tenants.demo.plugins.gone]
            path = "no-such.wasm"
            [tenants.demo.routes."/echo"]
            plugin = "nope"
            [tenants.demo.routes."/bad-{x}"]
            plugin = "echo"
            [tenants.health.plugins.echo]
            path = "Cargo.toml"
            limits = { timeout = "0s" }
            [tenants.health.routes."/echo"]
            plugin = "echo"
        "#;
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = std::path::Path::new("test.toml");
        let (_, problems) = crate::config::Config::parse_all(text, file, base).unwrap();
        let keys: Vec<String> = problems
            .iter()
            .map(|problem| match problem {
                crate::config::ConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("not a validation problem: {other}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "admin.max_connections",
                "tenants.demo.plugins.gone.path",
                "tenants.demo.routes.\"/bad-{x}\"",
                "tenants.demo.routes.\"/echo\".plugin",
                "tenants.health",
                "tenants.health.plugins.echo.limits.timeout",
            ]
        );
        assert_eq!(error(text), problems[0].to_string());
    }

    #[test]
    fn reserved_and_malformed_tenant_ids_are_refused() {
        let err = error(&MINIMAL.replace("demo", "health"));
        assert!(err.contains("reserved"), "{err}");
        let err = error(&MINIMAL.replace("demo", "\"a/b\""));
        assert!(err.contains("tenant id"), "{err}");
    }
}
