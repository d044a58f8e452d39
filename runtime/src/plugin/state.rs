//! What a plugin's `Store` holds: the plugin's fixed scope (tenant, registry, config,
//! grants) and the scope of the event being handled.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::call::{EventBudget, LogSpend};
use super::grants::Grants;
use super::outbound::{Hooks, Outbound};
use super::output::GuestOutput;
use super::quota::{Limiter, TenantQuota, Turn};
use crate::config::{PluginConfig, PluginLimits, TenantConfig};
use crate::execlog::ExecutionLog;
use crate::metrics::{Metrics, PluginMetrics};
use crate::registry::{LocalRegistry, Registry};

/// What a plugin may see and reach; fixed when the plugin is loaded.
#[derive(Debug)]
pub struct PluginScope {
    /// The tenant the plugin belongs to; every host call is confined to it.
    pub tenant: Arc<str>,
    /// The plugin's name in the config, for logs.
    pub plugin: Arc<str>,
    /// The tenant's connections: the only registry this plugin can reach.
    pub registry: Arc<dyn Registry>,
    /// The plugin's config key-values, sorted by key.
    pub config: Vec<(String, String)>,
    /// What the host API lets it reach.
    pub grants: Grants,
    /// The tenant's message size cap, enforced on `send`.
    pub max_message_bytes: usize,
    /// Sandbox limits.
    pub limits: PluginLimits,
    /// Where failures and host calls are counted.
    pub metrics: PluginMetrics,
    /// Events of this plugin that may hold an instance at once.
    pub instances: Arc<tokio::sync::Semaphore>,
    /// The tenant's caps on instances in use and on memory, shared by its plugins.
    pub quota: Arc<TenantQuota>,
    /// Permits for the tenant's long-running events, shared by its plugins: an event
    /// that runs past one epoch tick needs one to go on.
    pub events: Arc<tokio::sync::Semaphore>,
    /// Until when (ms since the epoch) the plugin counts as CPU-heavy: set whenever one
    /// of its events computes for more than `heavy::HEAVY_COMPUTE`. A heavy plugin's
    /// events run on the low-priority lane (`plugin::heavy`).
    pub heavy_until_ms: std::sync::atomic::AtomicU64,
    /// What the plugin may call over HTTP.
    pub outbound: Arc<Outbound>,
    /// The management API's public `host:port` (config key `wsgate.domain_name`), once
    /// the admin listener is bound.
    pub domain_name: Arc<arc_swap::ArcSwapOption<String>>,
    /// The tenant's execution log, where the plugin's log lines and failed events are
    /// kept for the tenant to read (`GET /{tenant}/@logs`).
    pub execution_log: Arc<ExecutionLog>,
}

impl PluginScope {
    /// The scope of plugin `name` (`plugin`) of tenant `tenant` outside any gateway: an
    /// empty registry and metrics of its own, and the limits, grants and outbound
    /// settings of its config, as serving would give it. With it a plugin is linked as
    /// the gateway would link it (`wsgate check`). `base_dir` resolves
    /// `outbound_ca_file`; `runtime` would run its HTTP calls. Fails with the reason
    /// when the plugin's outbound settings are unusable (a bad CA file).
    pub fn standalone(
        tenant: &str,
        tenant_config: &TenantConfig,
        name: &str,
        plugin: &PluginConfig,
        base_dir: &std::path::Path,
        runtime: tokio::runtime::Handle,
    ) -> Result<PluginScope, String> {
        let metrics = Metrics::new();
        let outbound = Outbound::from_config(
            tenant,
            name,
            plugin,
            base_dir,
            metrics.plugin(tenant, name),
            runtime,
        )?;
        let limits = &tenant_config.limits;
        Ok(PluginScope {
            tenant: tenant.into(),
            plugin: name.into(),
            registry: Arc::new(LocalRegistry::default()),
            config: plugin.config.clone().into_iter().collect(),
            grants: Grants::from_config(plugin),
            max_message_bytes: limits.max_message_bytes,
            limits: plugin.limits.clone(),
            metrics: metrics.plugin(tenant, name),
            instances: Arc::new(tokio::sync::Semaphore::new(plugin.limits.max_instances)),
            quota: Arc::new(TenantQuota::new(limits.max_instances, limits.memory_bytes)),
            events: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_events)),
            heavy_until_ms: Default::default(),
            outbound: Arc::new(outbound),
            domain_name: Default::default(),
            execution_log: Arc::new(ExecutionLog::new(
                limits.execution_log_entries,
                limits.execution_log_bytes,
                Default::default(),
            )),
        })
    }
}

/// The event being handled, set before each call.
#[derive(Debug, Clone)]
pub struct EventScope {
    /// The connection whose event this is (empty for none).
    pub connection: Arc<str>,
    /// The route template, for logs.
    pub route: Arc<str>,
    /// When the guest must be interrupted: its time limit, moved out by the time it
    /// waited on HTTP calls (`plugin::wait`).
    pub deadline: Instant,
    /// When the event's waits on HTTP calls must end (`limits.outbound_timeout` after it
    /// started; at once for a plugin granted no origin).
    pub waits_until: Instant,
    /// The connection's context set by `set-context` during `$connect` (`None` in other
    /// events); the upgrade keeps it if accepted.
    pub context: Option<String>,
    /// Whether this is the connection's `$connect` event.
    pub connecting: bool,
    /// While the instance runs its start code, and until when it may do so without one
    /// of the tenant's permits (see `epoch::on_tick`).
    pub starting_until: Option<Instant>,
}

/// The data of one plugin instance's `Store`.
pub struct HostState {
    /// A WASI context with no capabilities (no files, sockets, environment or args);
    /// only stdout and stderr, which go to the log.
    wasi: WasiCtx,
    /// WASI resources (streams, pollables, HTTP requests and responses).
    pub(super) table: ResourceTable,
    /// wasi:http's settings (field size limit).
    http: WasiHttpCtx,
    /// Where the guest's HTTP requests are checked and sent.
    pub(super) hooks: Hooks,
    /// The event's place under the plugin's and the tenant's instance caps; traded for
    /// a waiting place while it waits on HTTP calls (`plugin::wait`).
    pub(super) place: Option<Turn>,
    /// The event's waiting place, while it waits.
    pub(super) waiting: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Memory, table and instance caps, enforced by wasmtime, and the tenant's memory
    /// budget.
    pub(super) limits: Limiter,
    /// Fixed scope.
    pub(super) scope: Arc<PluginScope>,
    /// Current event.
    pub(super) event: EventScope,
    /// The guest's stderr, kept to explain a trap.
    pub(super) stderr: GuestOutput,
    /// What the current event has spent of its host-call and log budgets; shared with
    /// the guest's stdout and stderr, whose writes count too.
    pub(super) budget: Arc<EventBudget>,
    /// The tenant event permit this event holds, taken once it runs past one epoch
    /// tick; shared with the future that waits for one.
    pub(super) turn: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl HostState {
    /// A fresh state for a new instance of the plugin described by `scope`.
    pub fn new(scope: Arc<PluginScope>) -> Self {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(scope.limits.memory_bytes)
            .instances(16)
            .tables(16)
            .memories(4)
            .table_elements(100_000)
            // A refused memory.grow becomes a trap with a clear cause, rather than a
            // guest allocation failure further on.
            .trap_on_grow_failure(true)
            .build();
        let limits = Limiter::new(store_limits, scope.quota.memory.clone());
        let now = Instant::now();
        let event = EventScope {
            connection: Arc::from(""),
            route: Arc::from(""),
            deadline: now,
            waits_until: now,
            context: None,
            connecting: false,
            starting_until: None,
        };
        let budget = Arc::new(EventBudget::default());
        let stdout = GuestOutput::new(scope.clone(), budget.clone(), "stdout");
        let stderr = GuestOutput::new(scope.clone(), budget.clone(), "stderr");
        Self {
            wasi: WasiCtx::builder()
                .stdout(stdout)
                .stderr(stderr.clone())
                .build(),
            stderr,
            budget,
            turn: Arc::default(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: Hooks::new(scope.outbound.clone()),
            place: None,
            waiting: None,
            limits,
            scope,
            event,
        }
    }

    /// Ends the current event's budgets: see [`EventBudget::end`]. Called after every
    /// event, whatever its outcome, so a pooled instance starts the next one afresh.
    pub(super) fn end_event(&self) -> LogSpend {
        self.budget.end(&self.scope, &self.event)
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
