//! Prometheus metrics, served as text at `GET /metrics` on the admin listener.
//!
//! Counters on the per-message path are resolved once per tenant ([`TenantMetrics`])
//! or plugin ([`PluginMetrics`]), so counting a message or a host call is one atomic
//! increment. Label values that form a closed set are enums (`labels`).

mod labels;

pub use labels::{AuthFailure, FailureKind, Import, Limit, Outcome};

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    tenant: String,
    code: CloseCodeLabel,
}

/// A close code as a label: the codes RFC 6455 registers (1000–1015) as themselves,
/// anything else (a client's or application's own code) as `other`, so clients cannot
/// add series at will.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct CloseCodeLabel(u16);

impl CloseCodeLabel {
    fn new(code: u16) -> CloseCodeLabel {
        CloseCodeLabel(if (1000..=1015).contains(&code) {
            code
        } else {
            0
        })
    }
}

impl prometheus_client::encoding::EncodeLabelValue for CloseCodeLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self.0 {
            0 => encoder.write_str("other"),
            code => write!(encoder, "{code}"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    tenant: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    tenant: String,
    limit: Limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    tenant: String,
    plugin: String,
    kind: FailureKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImportLabels {
    tenant: String,
    plugin: String,
    import: Import,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabel {
    reason: AuthFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    tenant: String,
    plugin: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginName {
    tenant: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    tenant: String,
    plugin: String,
    event: &'static str,
}

/// The events a plugin handles, as labels and indexes of [`PluginMetrics::events`].
const EVENTS: [&str; 3] = ["connect", "message", "disconnect"];

/// Which event a plugin ran, for [`PluginMetrics::event_ran`].
#[derive(Debug, Clone, Copy)]
pub enum EventKind {
    /// `$connect`.
    Connect = 0,
    /// A message.
    Message = 1,
    /// `$disconnect`.
    Disconnect = 2,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: &'static str,
}

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    connections: Family<TenantLabel, Gauge>,
    closed: Family<CloseLabels, Counter>,
    refused: Family<StatusLabels, Counter>,
    upgrades: Family<StatusLabels, Counter>,
    api_requests: Family<StatusLabels, Counter>,
    messages_in: Family<TenantLabel, Counter>,
    bytes_in: Family<TenantLabel, Counter>,
    messages_out: Family<TenantLabel, Counter>,
    bytes_out: Family<TenantLabel, Counter>,
    limits: Family<LimitLabels, Counter>,
    plugin_failures: Family<PluginLabels, Counter>,
    heavy_events: Family<PluginName, Counter>,
    event_seconds: Family<EventLabels, Histogram, fn() -> Histogram>,
    host_calls: Family<ImportLabels, Counter>,
    auth_failures: Family<AuthFailureLabel, Counter>,
    outbound: Family<OutboundLabels, Counter>,
    outbound_seconds: Family<PluginName, Histogram, fn() -> Histogram>,
    cluster_swept: Counter,
    cluster_degraded: Gauge,
    reloads: Family<ReloadLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("wsgate");
        let metrics = Metrics {
            connections: Family::default(),
            closed: Family::default(),
            refused: Family::default(),
            upgrades: Family::default(),
            api_requests: Family::default(),
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            bytes_out: Family::default(),
            limits: Family::default(),
            plugin_failures: Family::default(),
            heavy_events: Family::default(),
            event_seconds: Family::new_with_constructor(event_buckets),
            host_calls: Family::default(),
            auth_failures: Family::default(),
            outbound: Family::default(),
            outbound_seconds: Family::new_with_constructor(outbound_buckets),
            cluster_swept: Counter::default(),
            cluster_degraded: Gauge::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_closed",
            "Closed connections by close code (1000-1015; other codes as \"other\")",
            metrics.closed.clone(),
        );
        registry.register(
            "upgrades_refused",
            "Upgrade requests answered with an HTTP error",
            metrics.refused.clone(),
        );
        registry.register(
            "upgrades",
            "Upgrade requests by the status they were answered with (101, or the HTTP error); tenant \"\" before a tenant is known",
            metrics.upgrades.clone(),
        );
        registry.register(
            "api_requests",
            "Management API requests (AWS @connections, @logs, Yandex) by the tenant that made them and the status answered; tenant \"\" when no credential passed",
            metrics.api_requests.clone(),
        );
        registry.register(
            "messages_received",
            "Messages received from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "message_bytes_received",
            "Bytes of the messages received from clients (payloads)",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages written to clients: plugin replies, sends, broadcasts, management API posts, error frames",
            metrics.messages_out.clone(),
        );
        registry.register(
            "message_bytes_sent",
            "Bytes of the messages written to clients (payloads)",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "plugin_failures",
            format!(
                "Plugin events that failed, by cause ({})",
                FailureKind::names()
            ),
            metrics.plugin_failures.clone(),
        );
        registry.register(
            "plugin_host_calls",
            format!(
                "Host calls made by plugins, by import ({})",
                Import::names()
            ),
            metrics.host_calls.clone(),
        );
        registry.register(
            "limits_hit",
            format!(
                "Client, tenant and plugin limits that refused, dropped or closed something ({})",
                Limit::names()
            ),
            metrics.limits.clone(),
        );
        registry.register(
            "plugin_heavy_events",
            "Events run on the low-priority lane because their plugin recently computed for over 3 ms in one event",
            metrics.heavy_events.clone(),
        );
        registry.register(
            "admin_auth_failures",
            format!(
                "Admin API requests whose credentials were refused, by reason ({})",
                AuthFailure::names()
            ),
            metrics.auth_failures.clone(),
        );
        registry.register(
            "outbound_requests",
            format!(
                "HTTP calls made by plugins, by outcome ({})",
                Outcome::names()
            ),
            metrics.outbound.clone(),
        );
        registry.register(
            "outbound_request_duration_seconds",
            "Time from a plugin's HTTP call to the answer's head (or the failure), waits for a turn included",
            metrics.outbound_seconds.clone(),
        );
        registry.register(
            "cluster_swept_connections",
            "Connections of dead nodes that this node swept and ran $disconnect for",
            metrics.cluster_swept.clone(),
        );
        registry.register(
            "cluster_degraded",
            "1 while this node cannot reach the cluster's Redis (it still serves its own clients)",
            metrics.cluster_degraded.clone(),
        );
        registry.register(
            "plugin_event_duration_seconds",
            "Plugin events by tenant, plugin and event (connect, message, disconnect): time from the gateway's call to the plugin's answer, waits for an instance included; _count is the number of invocations",
            metrics.event_seconds.clone(),
        );
        registry.register(
            "reloads",
            "Config reloads (SIGHUP or POST /-/reload), by result (ok, refused)",
            metrics.reloads.clone(),
        );
        for result in ["ok", "refused"] {
            let _ = metrics.reloads.get_or_create(&ReloadLabel { result });
        }
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// What the console shows of `tenant` (whose plugins are `plugins`), read without
    /// creating a series that traffic has not.
    pub fn figures<'p>(
        &self,
        tenant: &str,
        plugins: impl IntoIterator<Item = &'p str>,
    ) -> TenantFigures {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        let counter =
            |family: &Family<TenantLabel, Counter>| family.get(&label).map_or(0, |c| c.get());
        let mut failures: Vec<(FailureKind, u64)> =
            FailureKind::ALL.iter().map(|&kind| (kind, 0)).collect();
        for plugin in plugins {
            for (kind, count) in &mut failures {
                let labels = PluginLabels {
                    tenant: tenant.to_owned(),
                    plugin: plugin.to_owned(),
                    kind: *kind,
                };
                *count += self.plugin_failures.get(&labels).map_or(0, |c| c.get());
            }
        }
        TenantFigures {
            connections: self
                .connections
                .get(&label)
                .map_or(0, |g| g.get().max(0) as u64),
            messages_received: counter(&self.messages_in),
            messages_sent: counter(&self.messages_out),
            bytes_received: counter(&self.bytes_in),
            bytes_sent: counter(&self.bytes_out),
            failures,
        }
    }

    /// Counts connections of dead nodes swept by this node.
    pub fn cluster_swept(&self, n: u64) {
        self.cluster_swept.inc_by(n);
    }

    /// Counts a management API request of `tenant` (`""`: not authenticated) answered
    /// with `status`.
    pub fn api_request(&self, tenant: &str, status: u16) {
        self.api_requests
            .get_or_create(&StatusLabels {
                tenant: tenant.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a reload: put in force (`ok`) or refused.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&ReloadLabel { result }).inc();
    }

    /// Sets whether this node is cut off from the cluster's Redis.
    pub fn cluster_degraded(&self, degraded: bool) {
        self.cluster_degraded.set(i64::from(degraded));
    }

    /// The metrics of one plugin.
    pub fn plugin(self: &Arc<Self>, tenant: &str, plugin: &str) -> PluginMetrics {
        let host_calls = Import::ALL
            .iter()
            .map(|&import| {
                self.host_calls
                    .get_or_create(&ImportLabels {
                        tenant: tenant.to_owned(),
                        plugin: plugin.to_owned(),
                        import,
                    })
                    .clone()
            })
            .collect();
        let events = EVENTS.map(|event| {
            self.event_seconds
                .get_or_create(&EventLabels {
                    tenant: tenant.to_owned(),
                    plugin: plugin.to_owned(),
                    event,
                })
                .clone()
        });
        PluginMetrics {
            tenant: tenant.to_owned(),
            plugin: plugin.to_owned(),
            host_calls,
            events,
            outbound: Default::default(),
            outbound_seconds: OnceLock::new(),
            all: self.clone(),
        }
    }

    /// Counts `n` things a limit of `tenant` refused at once.
    pub fn limit_hits(&self, tenant: &str, limit: Limit, n: u64) {
        self.limits
            .get_or_create(&LimitLabels {
                tenant: tenant.to_owned(),
                limit,
            })
            .inc_by(n);
    }

    /// Counts an admin API request whose credentials were refused (or not checked).
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&AuthFailureLabel { reason })
            .inc();
    }

    /// Counts an upgrade refused with `status` (before a tenant is known: tenant "").
    pub fn refused(&self, tenant: &str, status: u16) {
        let labels = StatusLabels {
            tenant: tenant.to_owned(),
            status,
        };
        self.upgrades.get_or_create(&labels).inc();
        self.refused.get_or_create(&labels).inc();
    }

    /// The metrics of one tenant.
    pub fn tenant(self: &Arc<Self>, tenant: &str) -> TenantMetrics {
        let label = TenantLabel {
            tenant: tenant.to_owned(),
        };
        TenantMetrics {
            tenant: tenant.to_owned(),
            connections: self.connections.get_or_create(&label).clone(),
            messages_in: self.messages_in.get_or_create(&label).clone(),
            bytes_in: self.bytes_in.get_or_create(&label).clone(),
            messages_out: self.messages_out.get_or_create(&label).clone(),
            bytes_out: self.bytes_out.get_or_create(&label).clone(),
            all: self.clone(),
        }
    }
}

/// A tenant's figures as [`Metrics::figures`] reads them: totals since the process
/// started, but for the open connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFigures {
    /// Open connections on this node (the exact gauge).
    pub connections: u64,
    /// Messages received from clients.
    pub messages_received: u64,
    /// Messages written to clients.
    pub messages_sent: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Failed plugin events by kind, every kind listed.
    pub failures: Vec<(FailureKind, u64)>,
}

/// Buckets of the plugin event histogram: 100 µs to about 13 s, doubling.
fn event_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

/// Buckets of the outbound duration histogram: 1 ms to about 33 s, doubling.
fn outbound_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// A tenant's metrics, with the per-message ones resolved.
#[derive(Debug)]
pub struct TenantMetrics {
    tenant: String,
    connections: Gauge,
    messages_in: Counter,
    bytes_in: Counter,
    messages_out: Counter,
    bytes_out: Counter,
    all: Arc<Metrics>,
}

impl TenantMetrics {
    /// A connection closed with `code` (the registry keeps the open-connections gauge).
    pub fn connection_closed(&self, code: u16) {
        self.all
            .closed
            .get_or_create(&CloseLabels {
                tenant: self.tenant.clone(),
                code: CloseCodeLabel::new(code),
            })
            .inc();
    }

    /// A message of `bytes` arrived from a client.
    pub fn message_in(&self, bytes: usize) {
        self.messages_in.inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    /// A message of `bytes` was written to a client.
    pub fn message_out(&self, bytes: usize) {
        self.messages_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }

    /// A client limit refused or closed something.
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits(limit, 1);
    }

    /// A limit refused `n` things at once (a broadcast's full queues).
    pub fn limit_hits(&self, limit: Limit, n: u64) {
        self.all.limit_hits(&self.tenant, limit, n);
    }

    /// The open-connections gauge, for the registry to keep.
    pub fn connections_gauge(&self) -> Gauge {
        self.connections.clone()
    }

    /// An upgrade was refused with `status`.
    pub fn refused(&self, status: u16) {
        self.all.refused(&self.tenant, status);
    }

    /// An upgrade was answered 101.
    pub fn upgraded(&self) {
        self.all
            .upgrades
            .get_or_create(&StatusLabels {
                tenant: self.tenant.clone(),
                status: 101,
            })
            .inc();
    }
}

/// A plugin's metrics, with its host-call counters resolved.
#[derive(Debug)]
pub struct PluginMetrics {
    tenant: String,
    plugin: String,
    /// One counter per import, indexed by [`Import::index`].
    host_calls: Vec<Counter>,
    /// One histogram per event kind, indexed by [`EventKind`].
    events: [Histogram; 3],
    /// Outbound calls by outcome (indexed like [`Outcome::ALL`]) and their durations,
    /// resolved at first use: a plugin that never calls out shows no such series, and
    /// one that does pays no label lookup per call.
    outbound: [OnceLock<Counter>; Outcome::ALL.len()],
    outbound_seconds: OnceLock<Histogram>,
    all: Arc<Metrics>,
}

impl PluginMetrics {
    /// Every metric of the gateway.
    pub fn all(&self) -> &Arc<Metrics> {
        &self.all
    }

    /// Records an event the plugin ran (or failed) in `seconds`.
    pub fn event_ran(&self, kind: EventKind, seconds: f64) {
        self.events[kind as usize].observe(seconds);
    }

    /// Counts a host call.
    pub fn host_call(&self, import: Import) {
        self.host_calls[import.index()].inc();
    }

    /// Counts a failed event.
    pub fn failure(&self, kind: FailureKind) {
        self.all
            .plugin_failures
            .get_or_create(&PluginLabels {
                tenant: self.tenant.clone(),
                plugin: self.plugin.clone(),
                kind,
            })
            .inc();
    }

    /// Counts an outbound HTTP call that ended with `outcome` after `seconds`.
    pub fn outbound(&self, outcome: Outcome, seconds: f64) {
        self.outbound[outcome as usize]
            .get_or_init(|| {
                self.all
                    .outbound
                    .get_or_create(&OutboundLabels {
                        tenant: self.tenant.clone(),
                        plugin: self.plugin.clone(),
                        outcome,
                    })
                    .clone()
            })
            .inc();
        if outcome != Outcome::Denied {
            self.outbound_seconds
                .get_or_init(|| {
                    self.all
                        .outbound_seconds
                        .get_or_create(&PluginName {
                            tenant: self.tenant.clone(),
                            plugin: self.plugin.clone(),
                        })
                        .clone()
                })
                .observe(seconds);
        }
    }

    /// Counts an event run on the low-priority lane.
    pub fn heavy_event(&self) {
        self.all
            .heavy_events
            .get_or_create(&PluginName {
                tenant: self.tenant.clone(),
                plugin: self.plugin.clone(),
            })
            .inc();
    }

    /// A limit of the plugin's tenant refused `n` things at once.
    pub fn limit_hits(&self, limit: Limit, n: u64) {
        self.all.limit_hits(&self.tenant, limit, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_a_tenants_series_without_creating_any() {
        let metrics = Metrics::new();
        let demo = metrics.tenant("demo");
        demo.message_in(5);
        demo.message_in(7);
        demo.message_out(3);
        demo.connections_gauge().inc();
        let plugin = metrics.plugin("demo", "echo");
        plugin.failure(FailureKind::Trap);
        plugin.failure(FailureKind::Trap);
        metrics.plugin("demo", "chat").failure(FailureKind::Timeout);
        let before = metrics.encode();

        let figures = metrics.figures("demo", ["echo", "chat", "never-loaded"]);
        assert_eq!(figures.connections, 1);
        assert_eq!((figures.messages_received, figures.bytes_received), (2, 12));
        assert_eq!((figures.messages_sent, figures.bytes_sent), (1, 3));
        let count = |kind| figures.failures.iter().find(|(k, _)| *k == kind).unwrap().1;
        assert_eq!(count(FailureKind::Trap), 2);
        assert_eq!(count(FailureKind::Timeout), 1);
        assert_eq!(figures.failures.len(), FailureKind::ALL.len());

        let nobody = metrics.figures("nobody", ["echo"]);
        assert_eq!((nobody.connections, nobody.messages_received), (0, 0));
        assert_eq!(metrics.encode(), before, "reading created a series");
    }
}
