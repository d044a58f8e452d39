//! The gateway as a whole, in two lifetimes. [`Gateway`] holds what lives as long as the
//! process: the wasm engine, metrics, each tenant's connection registry and the
//! connection count. A [`Snapshot`] holds what a config reload replaces: tenants,
//! routes, plugins, limits and credentials. The current snapshot sits behind an atomic
//! pointer: [`Gateway::swap`] installs a new one while sockets live, and connections
//! look their route up by stable keys (tenant id, route template) at every event.
//!
//! - `reload`: re-reading the config file into a new snapshot, what changed, and the
//!   routes a reload removed, served until their grace ends.

mod history;
mod reload;

pub use history::ReloadRecord;
pub use reload::{ReloadError, ReloadReport, reload_on_hangup};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::cluster::{Cluster, ClusterRegistry};
use crate::config::{AdminConfig, Config, ConfigError, GlobalLimits, LifecycleConfig};
use crate::credentials::Keys;
use crate::execlog::ExecutionLog;
use crate::metrics::Metrics;
use crate::plugin::{
    Digest, EngineError, Grants, Host, Loader, Outbound, Plugin, PluginScope, TenantQuota,
};
use crate::registry::{LocalRegistry, Registry};
use crate::tenant::{Route, Tenant};

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config names something unusable (a plugin that does not load, …).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The wasm engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A route's stable key across snapshots: tenant id and template.
type RouteKey = (Arc<str>, Arc<str>);

/// What lives as long as the process.
pub struct Gateway {
    /// The wasm engine and linker every snapshot's plugins are compiled with.
    host: Host,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Each tenant's registry, by tenant id: connections outlive snapshots.
    registries: Mutex<HashMap<Arc<str>, LocalRegistry>>,
    /// Sockets across tenants, from accept to close, against the snapshot's
    /// `max_connections`.
    open: Slots,
    /// Each tenant's connection slots, by tenant id: like registries, they outlive
    /// snapshots.
    tenant_slots: Mutex<HashMap<Arc<str>, Slots>>,
    /// Each tenant's share of the cores and its quotas, by tenant id: they outlive
    /// snapshots (a reload updates the quotas).
    shares: Mutex<HashMap<Arc<str>, Arc<crate::fair::TenantShare>>>,
    /// Which tenants send, for their shares to take turns while more than one does.
    contention: Arc<crate::fair::Contention>,
    /// What the config says now.
    current: ArcSwap<Snapshot>,
    /// The management API's public `host:port`, known once the admin listener is bound
    /// (or set by `[admin] domain_name`); plugins read it as `wsgate.domain_name`.
    domain_name: Arc<ArcSwapOption<String>>,
    /// The addresses the listeners are on, and the way a reload moves them.
    pub listeners: crate::listeners::Listeners,
    /// The admin listener's bound address, for `wsgate.domain_name` when the config
    /// names none.
    admin_bound: Mutex<Option<std::net::SocketAddr>>,
    /// The main runtime, where plugins' HTTP calls run whatever lane their event is on.
    runtime: tokio::runtime::Handle,
    /// This node's membership of a cluster, in cluster mode.
    cluster: Option<Arc<Cluster>>,
    /// The config file, read again at each reload.
    config_file: PathBuf,
    /// The config the process started with: what settings read only at start-up are
    /// compared against.
    started: Config,
    /// The TLS settings both listeners accept with, when `[tls]` is set; replaced by a
    /// reload, so a rotated certificate serves the next handshake.
    tls: ArcSwapOption<rustls::ServerConfig>,
    /// Open and new connections per source address, across snapshots.
    sources: crate::sources::SourceLimits,
    /// Set once the node drains: `/ready` answers 503 and new upgrades are refused.
    draining: AtomicBool,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The last reloads, for the console.
    pub reloads: history::ReloadHistory,
    /// When the process started serving (ms since the epoch), for the console.
    pub started_at: u64,
    /// Routes a reload removed, by tenant id and template, served to the connections
    /// they still have until their grace ends.
    retiring: Mutex<HashMap<RouteKey, Arc<Route>>>,
    /// Each tenant's execution log, by tenant id: like registries, they outlive
    /// snapshots, so a reload loses no entry and keeps the sequence numbers going.
    execution_logs: Mutex<HashMap<Arc<str>, Arc<ExecutionLog>>>,
    /// Cancelled at shutdown: ends every execution log's followers.
    stop_following: tokio_util::sync::CancellationToken,
}

/// What a reload replaces: one config's tenants with their plugins loaded.
#[derive(Debug)]
pub struct Snapshot {
    /// Tenants by id.
    tenants: HashMap<Arc<str>, Arc<Tenant>>,
    /// Tenants by host name (lower case).
    hosts: HashMap<String, Arc<Tenant>>,
    /// Limits of the whole gateway.
    pub limits: GlobalLimits,
    /// Every tenant's management credentials.
    pub keys: Keys,
    /// The admin listener's limits.
    pub admin: AdminConfig,
    /// Reloads and draining.
    pub lifecycle: LifecycleConfig,
    /// Load balancers whose connections may name the client.
    pub proxies: crate::proxy::TrustedProxies,
    /// Whether their WebSocket connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The config this snapshot was built from (what a reload compares against).
    config: Config,
    /// Each plugin's component digest and settings, by tenant and plugin name: what a
    /// reload compares to say which plugins it replaced.
    plugins: BTreeMap<(String, String), (Digest, String)>,
}

/// A counter of slots under a cap: the gateway's sockets, or a tenant's connections.
#[derive(Debug, Clone, Default)]
pub struct Slots(Arc<AtomicUsize>);

impl Slots {
    /// Takes a slot if fewer than `max` are taken. Taking and checking are one atomic
    /// step, so concurrent takers can never overshoot the cap together.
    pub fn take(&self, max: usize) -> Option<ConnectionSlot> {
        let taken = self.0.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.0.clone());
        (taken < max).then_some(slot)
    }

    /// How many are taken now.
    pub fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A slot counted against a cap (see [`Slots`]); freed when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// Starts the engine, compiles every plugin and builds the first snapshot. A plugin
    /// that is not a valid component implementing the world fails with its config key.
    pub fn new(config: &Config) -> Result<Gateway, GatewayError> {
        let host = Host::new(
            config.limits.max_wasm_stack_bytes,
            config.compile.cache_dir(&config.base_dir),
            config.compile.function_cache,
        )?;
        let empty = Snapshot::empty(config);
        let tls = load_tls(config)?;
        let gateway = Gateway {
            host,
            metrics: Metrics::new(),
            registries: Mutex::default(),
            open: Slots::default(),
            tenant_slots: Mutex::default(),
            shares: Mutex::default(),
            contention: Arc::default(),
            current: ArcSwap::from_pointee(empty),
            domain_name: Arc::default(),
            listeners: crate::listeners::Listeners::new(&config.listen),
            admin_bound: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().map_err(|_| {
                GatewayError::Engine(EngineError::Start(
                    "the gateway must start inside a tokio runtime".into(),
                ))
            })?,
            cluster: config.cluster.as_ref().map(Cluster::new).transpose()?,
            config_file: config.file.clone(),
            started: config.clone(),
            tls: ArcSwapOption::new(tls),
            draining: AtomicBool::new(false),
            sources: Default::default(),
            reloading: tokio::sync::Mutex::new(()),
            reloads: history::ReloadHistory::default(),
            started_at: crate::registry::now_ms(),
            retiring: Mutex::default(),
            execution_logs: Mutex::default(),
            stop_following: Default::default(),
        };
        let snapshot = gateway.build(config)?;
        gateway.swap(snapshot);
        Ok(gateway)
    }

    /// Publishes the management API's address to plugins (`wsgate.domain_name`):
    /// `[admin] domain_name` if set, else `bound` (the admin listener's address; `None`
    /// keeps the last one). Called at start, when the admin listener moves and at every
    /// reload.
    pub fn publish_admin_address(&self, bound: Option<std::net::SocketAddr>) {
        let bound = {
            let mut known = self.admin_bound.lock().unwrap_or_else(|e| e.into_inner());
            if bound.is_some() {
                *known = bound;
            }
            *known
        };
        let name = self
            .snapshot()
            .admin
            .domain_name
            .clone()
            .or_else(|| bound.map(|b| b.to_string()));
        self.domain_name.store(name.map(Arc::new));
    }

    /// Loads `config` into a snapshot on this gateway's engine, without installing it.
    /// Tenants keep their registries (and so their connections) across snapshots.
    pub fn build(&self, config: &Config) -> Result<Snapshot, ConfigError> {
        let mut loader = Loader::new(&self.host);
        let mut tenants = HashMap::new();
        let mut hosts = HashMap::new();
        let mut fingerprints = BTreeMap::new();
        for (id, tenant_config) in &config.tenants {
            let metrics = Arc::new(self.metrics.tenant(id));
            let registry = self.registry(id, &metrics);
            let execution_log = self.execution_log_or_new(id, &tenant_config.limits);
            let events = Arc::new(tokio::sync::Semaphore::new(
                tenant_config.limits.max_concurrent_events,
            ));
            let quota = Arc::new(TenantQuota::new(
                tenant_config.limits.max_instances,
                tenant_config.limits.memory_bytes,
            ));
            let mut plugins: HashMap<String, Arc<Plugin>> = HashMap::new();
            for (name, plugin_config) in &tenant_config.plugins {
                let outbound = Outbound::from_config(
                    id,
                    name,
                    plugin_config,
                    &config.base_dir,
                    self.metrics.plugin(id, name),
                    self.runtime.clone(),
                )
                .map_err(|reason| {
                    config.invalid(
                        format!("tenants.{id}.plugins.{name}.outbound_ca_file"),
                        reason,
                    )
                })?;
                let scope = PluginScope {
                    tenant: id.as_str().into(),
                    plugin: name.as_str().into(),
                    registry: registry.clone(),
                    config: plugin_settings(plugin_config, self.tls.load().is_some()),
                    grants: Grants::from_config(plugin_config),
                    max_message_bytes: tenant_config.limits.max_message_bytes,
                    limits: plugin_config.limits.clone(),
                    metrics: self.metrics.plugin(id, name),
                    instances: Arc::new(tokio::sync::Semaphore::new(
                        plugin_config.limits.max_instances,
                    )),
                    quota: quota.clone(),
                    events: events.clone(),
                    heavy_until_ms: Default::default(),
                    outbound: Arc::new(outbound),
                    domain_name: self.domain_name.clone(),
                    execution_log: execution_log.clone(),
                };
                let loaded = loader.load(config, id, name, plugin_config, scope)?;
                fingerprints.insert(
                    (id.clone(), name.clone()),
                    (loaded.digest, format!("{plugin_config:?}")),
                );
                plugins.insert(name.clone(), Arc::new(loaded.plugin));
            }
            let tenant = Arc::new(Tenant::new(
                id,
                tenant_config,
                &plugins,
                registry,
                self.tenant_slots(id),
                self.tenant_share(id, &tenant_config.limits),
                metrics,
            ));
            for name in &tenant_config.hosts {
                hosts.insert(name.to_ascii_lowercase(), tenant.clone());
            }
            tenants.insert(tenant.id.clone(), tenant);
        }
        loader.finish();
        Ok(Snapshot {
            keys: Keys::new(tenants.values()),
            tenants,
            hosts,
            plugins: fingerprints,
            ..Snapshot::empty(config)
        })
    }

    /// Installs `snapshot`: new upgrades and every connection's next event use it;
    /// events already running finish on the one they started with.
    pub fn swap(&self, snapshot: Snapshot) {
        {
            let logs = self
                .execution_logs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (id, tenant) in &snapshot.config.tenants {
                if let Some(log) = logs.get(id.as_str()) {
                    let limits = &tenant.limits;
                    log.set_limits(limits.execution_log_entries, limits.execution_log_bytes);
                }
            }
        }
        self.current.store(Arc::new(snapshot));
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The route `template` of tenant `tenant` in the snapshot in force now, or, if a
    /// reload removed it, the route as it was until its grace ends.
    pub fn route(&self, tenant: &str, template: &str) -> Option<Arc<Route>> {
        let current = self
            .current
            .load()
            .tenants
            .get(tenant)
            .and_then(|t| t.route(template).cloned());
        current.or_else(|| {
            let retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
            retiring.get(&(tenant.into(), template.into())).cloned()
        })
    }

    /// The TLS settings new connections are accepted with, when `[tls]` is set.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.load_full()
    }

    /// Starts draining: `/ready` answers 503 and new upgrades are refused with 503,
    /// while open connections are served. Returns the configured drain delay.
    pub fn drain(&self) -> std::time::Duration {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!("draining: new clients are refused and /ready answers 503");
        }
        self.snapshot().lifecycle.drain_delay
    }

    /// The per-source connection limits' state.
    pub fn sources(&self) -> &crate::sources::SourceLimits {
        &self.sources
    }

    /// Whether the node drains (see [`Gateway::drain`]).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Takes a slot under the gateway-wide connection cap, if one is free. A socket
    /// holds one from accept to close, so sockets still in their upgrade count too.
    pub fn connection_slot(&self) -> Option<ConnectionSlot> {
        self.open.take(self.current.load().limits.max_connections)
    }

    /// The execution log of tenant `id`, if the tenant was ever configured.
    pub fn execution_log(&self, id: &str) -> Option<Arc<ExecutionLog>> {
        let logs = self
            .execution_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        logs.get(id).cloned()
    }

    /// Ends every follower of an execution log, and any that starts later: the
    /// gateway is shutting down.
    pub fn stop_following(&self) {
        self.stop_following.cancel();
    }

    /// The execution log of tenant `id`, made on first use with `limits` and kept for
    /// the process's life (a swap applies later limits).
    fn execution_log_or_new(
        &self,
        id: &str,
        limits: &crate::config::TenantLimits,
    ) -> Arc<ExecutionLog> {
        let mut logs = self
            .execution_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        logs.entry(id.into())
            .or_insert_with(|| {
                Arc::new(ExecutionLog::new(
                    limits.execution_log_entries,
                    limits.execution_log_bytes,
                    self.stop_following.clone(),
                ))
            })
            .clone()
    }

    /// The share of tenant `id` (its turns and quotas), made on first use with
    /// `limits` and kept for the process's life; a reload updates its quotas.
    fn tenant_share(
        &self,
        id: &str,
        limits: &crate::config::TenantLimits,
    ) -> Arc<crate::fair::TenantShare> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        shares
            .entry(id.into())
            .or_insert_with(|| {
                Arc::new(crate::fair::TenantShare::new(
                    limits,
                    self.contention.clone(),
                ))
            })
            .clone()
    }

    /// The connection slots of tenant `id`, made on first use and kept for the
    /// process's life.
    fn tenant_slots(&self, id: &str) -> Slots {
        let mut slots = self.tenant_slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(id.into()).or_default().clone()
    }

    /// Connections registered on this node, across tenants.
    pub fn registered(&self) -> usize {
        let registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        registries.values().map(LocalRegistry::len).sum()
    }

    /// The registry of tenant `id`: its connections on this node, made on first use
    /// and kept for the process's life, and in a cluster the verbs across nodes.
    fn registry(&self, id: &str, metrics: &crate::metrics::TenantMetrics) -> Arc<dyn Registry> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let local = registries
            .entry(id.into())
            .or_insert_with(|| match &self.cluster {
                Some(cluster) => cluster.local_registry(id, metrics.connections_gauge()),
                None => LocalRegistry::new(metrics.connections_gauge()),
            })
            .clone();
        match &self.cluster {
            Some(cluster) => Arc::new(ClusterRegistry::new(id, local, cluster.clone())),
            None => Arc::new(local),
        }
    }

    /// This node's membership of a cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Why this node is degraded (cut off from the cluster's Redis), or `None`.
    pub fn degraded(&self) -> Option<String> {
        self.cluster.as_ref()?.degraded()
    }
}

/// The reserved plugin config key naming the management API's scheme: `https` with
/// `[tls]`, else `http`. With `wsgate.domain_name` it makes the management URL a plugin
/// hands to backends (the integration plugin's `aws` shape).
const MANAGEMENT_SCHEME: &str = "wsgate.management_scheme";

/// A plugin's config keys as its scope holds them (sorted), with the reserved
/// [`MANAGEMENT_SCHEME`]. Turning TLS on or off takes a restart (a reload keeps what the
/// listeners speak), so `tls` as the listeners have it now holds for the snapshot's life.
fn plugin_settings(plugin: &crate::config::PluginConfig, tls: bool) -> Vec<(String, String)> {
    let mut settings = plugin.config.clone();
    let scheme = if tls { "https" } else { "http" };
    settings.insert(MANAGEMENT_SCHEME.to_owned(), scheme.to_owned());
    settings.into_iter().collect()
}

/// The TLS settings of `config`'s `[tls]`, read from its files; `None` without it.
fn load_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    config
        .tls
        .as_ref()
        .map(|tls| {
            crate::tls::server_config(tls, &config.base_dir)
                .map_err(|e| config.invalid(e.key, e.reason))
        })
        .transpose()
}

impl Snapshot {
    /// `config`'s settings, without tenants.
    fn empty(config: &Config) -> Snapshot {
        Snapshot {
            tenants: HashMap::new(),
            hosts: HashMap::new(),
            limits: config.limits.clone(),
            keys: Keys::default(),
            admin: config.admin.clone(),
            lifecycle: config.lifecycle.clone(),
            // Validation has parsed them.
            proxies: crate::proxy::TrustedProxies::parse(&config.listen.trusted_proxies)
                .unwrap_or_default(),
            proxy_protocol: config.listen.proxy_protocol,
            config: config.clone(),
            plugins: BTreeMap::new(),
        }
    }

    /// The tenant a request is for and the path below it. A `Host` listed by a tenant
    /// wins; otherwise the first path segment names the tenant.
    pub fn resolve<'p>(&self, host: Option<&str>, path: &'p str) -> Option<(Arc<Tenant>, &'p str)> {
        if let Some(host) = host {
            let name = host.rsplit_once(':').map_or(host, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host
                }
            });
            if let Some(tenant) = self.hosts.get(&name.to_ascii_lowercase()) {
                return Some((tenant.clone(), path));
            }
        }
        let rest = path.strip_prefix('/')?;
        let (id, below) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        self.tenants.get(id).map(|t| (t.clone(), below))
    }

    /// The names of `tenant`'s plugins.
    pub fn plugin_names<'s>(&'s self, tenant: &'s str) -> impl Iterator<Item = &'s str> {
        self.plugins
            .keys()
            .filter(move |(id, _)| id == tenant)
            .map(|(_, name)| name.as_str())
    }

    /// Every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }
}
