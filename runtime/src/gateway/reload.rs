//! Reloading under live traffic: the config file is read again and every plugin loaded
//! (an unchanged component is reused, not compiled) into a new snapshot, which is put in
//! force only if all of it loads. Connections stay open: their next event runs the new
//! plugin, and an event already running finishes on the old one. Routes a reload
//! removed keep serving the connections they have for `lifecycle.reload_grace`, then
//! close them with 1001. A listener whose address changed is bound anew before the
//! swap (see [`crate::listeners`]); the connections of the old one are closed with 1012
//! after the same grace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Gateway, RouteKey, Snapshot};
use crate::close::Close;
use crate::config::{Config, ConfigError};
use crate::registry::ListFilter;
use crate::tenant::Route;

/// How often, once a grace is over, what is left on a removed route is closed again.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// How many times, a [`RETIRE_EVERY`] apart, a retirement looks for removed tenants left
/// with nothing once their routes are done.
const FORGET_TRIES: usize = 30;

/// Why a reload was refused. The config in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config or one of its plugins is unusable (file, key and reason).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener's new address cannot be bound.
    #[error(transparent)]
    Listen(#[from] crate::listeners::BindError),
    /// The loading thread failed (a bug: it is logged with its panic).
    #[error("the reload failed unexpectedly: {0}")]
    Internal(String),
}

/// What a reload changed, for its answer and its log line.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// How long reading, loading and swapping took, in milliseconds.
    pub took_ms: u64,
    /// Tenants by id.
    pub tenants: Changes,
    /// Routes, as `tenant template` (e.g. `demo /chat/{room}`).
    pub routes: Changes,
    /// Plugins, as `tenant/plugin`: `changed` are those whose component or settings
    /// differ (replaced), `unchanged` the rest.
    pub plugins: PluginChanges,
    /// Settings that differ but are read at start-up only; they take effect at the
    /// next restart.
    pub needs_restart: Vec<String>,
    /// Connections on removed routes, closed with 1001 once the grace ends.
    pub retiring_connections: usize,
    /// The grace those connections have, in seconds.
    pub grace_seconds: f64,
    /// Listeners moved to a new address, with the address they are bound to now.
    pub listeners_moved: ListenersMoved,
    /// Connections through the old WebSocket listener, closed with 1012 once the grace
    /// ends.
    pub restarting_connections: usize,
}

/// The listeners a reload moved: their new bound addresses.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ListenersMoved {
    /// The WebSocket listener's, if it moved.
    pub ws: Option<String>,
    /// The admin listener's, if it moved.
    pub admin: Option<String>,
}

/// Names added, removed and changed.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// In the new config only.
    pub added: Vec<String>,
    /// In the old config only.
    pub removed: Vec<String>,
    /// In both, but different.
    pub changed: Vec<String>,
}

/// Plugins added, removed, replaced and kept.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PluginChanges {
    /// In the new config only.
    pub added: Vec<String>,
    /// In the old config only.
    pub removed: Vec<String>,
    /// A new component or new settings.
    pub replaced: Vec<String>,
    /// The same component and settings (a new instance pool all the same).
    pub unchanged: Vec<String>,
}

impl Changes {
    fn between<K: Ord + Clone + std::fmt::Display, V: PartialEq>(
        old: &BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
    ) -> Changes {
        let mut changes = Changes::default();
        for (key, value) in new {
            match old.get(key) {
                None => changes.added.push(key.to_string()),
                Some(before) if before != value => changes.changed.push(key.to_string()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|key| !new.contains_key(key))
            .map(ToString::to_string)
            .collect();
        changes
    }
}

impl Gateway {
    /// Reads the config file again and puts it in force if every part of it loads;
    /// otherwise refuses with the file, key and reason, and the running config stays.
    /// Reloads run one at a time.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        // A task of its own: a caller that gives up (an HTTP client's timeout) must not
        // cancel a reload half-way, unlogged.
        let this = self.clone();
        tokio::spawn(async move { this.reload_now().await })
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))?
    }

    async fn reload_now(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let started = Instant::now();
        let gateway = self.clone();
        // Reading files and compiling components blocks (a large component compiles for
        // seconds): off the reactor.
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, ConfigError> {
            let config = Config::load(&gateway.config_file)?;
            let tls = super::load_tls(&config)?;
            let snapshot = gateway.build(&config)?;
            Ok((snapshot, tls))
        })
        .await
        .map_err(|e| ReloadError::Internal(e.to_string()));
        let loaded = match loaded.and_then(|r| r.map_err(ReloadError::from)) {
            Ok((snapshot, tls)) => match self.listeners.bind(&snapshot.config.listen).await {
                Ok(bound) => Ok((snapshot, tls, bound)),
                Err(err) => Err(err.into()),
            },
            Err(err) => Err(err),
        };
        let (snapshot, tls, bound) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                self.metrics.reload(false);
                tracing::error!(error = %err, "reload refused; the running config stays");
                self.reloads.record(super::ReloadRecord {
                    at: crate::admin::connections::timestamp(crate::registry::now_ms()),
                    result: "refused",
                    took_ms: started.elapsed().as_millis() as u64,
                    summary: String::new(),
                    error: Some(err.to_string()),
                });
                return Err(err);
            }
        };
        let old = self.snapshot();
        let mut report = diff(&old, &snapshot);
        // Against what the process started with: a setting read only at start-up is
        // pending until a restart, however many reloads come in between.
        report.needs_restart = needs_restart(&self.started, &snapshot.config);
        let removed = removed_routes(&old, &snapshot);
        let grace = snapshot.lifecycle.reload_grace;
        // TLS on or off would change what clients must speak: that waits for a
        // restart; a new certificate for the same setting serves the next handshake.
        // Compared with what the listeners speak, not with the last config read.
        if self.tls.load().is_some() == tls.is_some() {
            self.tls.store(tls);
        }
        // Quotas change with the config; their state is kept where they did not.
        for tenant in snapshot.tenants() {
            tenant.share.update(&tenant.limits);
        }
        {
            // Before the swap, so that a removed route is never missing in between
            // (its connections would get `Forbidden`, or close without `$disconnect`);
            // a route the new config has is served by it, not by its old self.
            let mut retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
            retiring.retain(|(tenant, template), _| {
                snapshot
                    .tenant(tenant)
                    .is_none_or(|t| t.route(template).is_none())
            });
            for (key, route) in &removed {
                retiring.insert(key.clone(), route.clone());
            }
        }
        self.swap(snapshot);
        let moved = self.listeners.commit(bound);
        if let Some((address, old)) = moved.ws {
            report.listeners_moved.ws = Some(address.to_string());
            report.restarting_connections = self.registered();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                old.cancel();
            });
        }
        report.listeners_moved.admin = moved.admin.map(|a| a.to_string());
        // `[admin] domain_name` may have changed too.
        self.publish_admin_address(moved.admin);
        report.retiring_connections = removed
            .iter()
            .map(|((tenant, template), _)| self.count_on_route(tenant, template))
            .sum();
        report.grace_seconds = grace.as_secs_f64();
        if removed.is_empty() {
            // A removed tenant with no route to retire and no connection goes now.
            self.forget_removed_tenants();
        } else {
            let gateway = self.clone();
            tokio::spawn(async move { gateway.retire(removed, grace).await });
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        self.metrics.reload(true);
        self.reloads.record(super::ReloadRecord {
            at: crate::admin::connections::timestamp(crate::registry::now_ms()),
            result: "ok",
            took_ms: report.took_ms,
            summary: format!(
                "tenants {}; routes {}; plugins {}, {} unchanged",
                summary(
                    &report.tenants.added,
                    &report.tenants.removed,
                    &report.tenants.changed
                ),
                summary(
                    &report.routes.added,
                    &report.routes.removed,
                    &report.routes.changed
                ),
                summary(
                    &report.plugins.added,
                    &report.plugins.removed,
                    &report.plugins.replaced
                ),
                report.plugins.unchanged.len(),
            ),
            error: None,
        });
        tracing::info!(
            took_ms = report.took_ms,
            tenants = %summary(&report.tenants.added, &report.tenants.removed, &report.tenants.changed),
            routes = %summary(&report.routes.added, &report.routes.removed, &report.routes.changed),
            plugins = %summary(&report.plugins.added, &report.plugins.removed, &report.plugins.replaced),
            retiring_connections = report.retiring_connections,
            needs_restart = ?report.needs_restart,
            ws_moved_to = ?report.listeners_moved.ws,
            admin_moved_to = ?report.listeners_moved.admin,
            "reloaded"
        );
        Ok(report)
    }

    /// The route in the snapshot in force, ignoring retiring ones.
    fn route_in_force(&self, tenant: &str, template: &str) -> Option<Arc<Route>> {
        self.current
            .load()
            .tenants
            .get(tenant)
            .and_then(|t| t.route(template).cloned())
    }

    /// This node's connections on a route.
    fn count_on_route(&self, tenant: &str, template: &str) -> usize {
        let registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        registries.get(tenant).map_or(0, |registry| {
            registry.count_matching(&ListFilter {
                route: Some(template.to_owned()),
                path: None,
            })
        })
    }

    /// After `grace`, closes with 1001 the connections of the removed routes that no
    /// reload has added back, and forgets each old route once none of its connections
    /// is left. It looks again every second: a connection whose `$connect` was under
    /// way at the reload registers afterwards, and is closed at the next look.
    async fn retire(self: Arc<Self>, routes: Vec<(RouteKey, Arc<Route>)>, grace: Duration) {
        tokio::time::sleep(grace).await;
        let mut pending = routes;
        let mut first = true;
        while !pending.is_empty() {
            pending.retain(|(key, route)| self.close_retired(key, route, first));
            first = false;
            if !pending.is_empty() {
                tokio::time::sleep(RETIRE_EVERY).await;
            }
        }
        // Closed connections leave once their `$disconnect` has run: look again a few
        // times for the tenants they held.
        for _ in 0..FORGET_TRIES {
            if self.forget_removed_tenants() == 0 {
                break;
            }
            tokio::time::sleep(RETIRE_EVERY).await;
        }
    }

    /// Drops what the gateway keeps per tenant (registry, connection slots, share,
    /// execution log: up to `execution_log_bytes` each) for tenants the config no longer
    /// has, once nothing of theirs is left: no route retiring, no connection, no
    /// upgrade under way. Otherwise a gateway whose tenants come and go would keep them
    /// all for its life. A tenant added back later starts afresh.
    /// Returns how many removed tenants are still held (something of theirs is left).
    pub(super) fn forget_removed_tenants(&self) -> usize {
        let current = self.current.load();
        let retiring: std::collections::HashSet<Arc<str>> = {
            let retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
            retiring.keys().map(|(tenant, _)| tenant.clone()).collect()
        };
        let mut idle: Vec<Arc<str>> = Vec::new();
        let mut held = 0;
        {
            let registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
            let slots = self.tenant_slots.lock().unwrap_or_else(|e| e.into_inner());
            for (id, registry) in registries.iter() {
                if current.tenants.contains_key(id) {
                    continue;
                }
                if !retiring.contains(id)
                    && registry.is_empty()
                    && slots.get(id).is_none_or(|s| s.taken() == 0)
                {
                    idle.push(id.clone());
                } else {
                    held += 1;
                }
            }
        }
        if idle.is_empty() {
            return held;
        }
        forget(&self.registries, &idle);
        forget(&self.tenant_slots, &idle);
        forget(&self.shares, &idle);
        // A follower that began before the removal keeps its own handle until it
        // hangs up (at most a tenant's 8); no new one can start.
        forget(&self.execution_logs, &idle);
        tracing::info!(tenants = ?idle, "forgot removed tenants: nothing of theirs is left");
        held
    }

    /// Closes what is left on a removed route; forgets the route and returns `false`
    /// once nothing is (or a reload added the route back).
    fn close_retired(&self, key: &RouteKey, route: &Arc<Route>, first: bool) -> bool {
        let (tenant, template) = key;
        if self.route_in_force(tenant, template).is_some() {
            return false;
        }
        // A later reload that removed the route again (after adding it back) owns it
        // now, with its own grace.
        let still_ours = {
            let retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
            retiring.get(key).is_some_and(|r| Arc::ptr_eq(r, route))
        };
        if !still_ours {
            return false;
        }
        let reason = if self.current.load().tenants.contains_key(tenant) {
            "route removed by a reload"
        } else {
            "tenant removed by a reload"
        };
        let filter = ListFilter {
            route: Some(template.to_string()),
            path: None,
        };
        let registry = {
            let registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
            registries.get(tenant).cloned()
        };
        let left = registry.as_ref().map_or(0, |r| r.count_matching(&filter));
        if left == 0 {
            let mut retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
            retiring.remove(key);
            return false;
        }
        if let Some(registry) = registry {
            let closed = registry.close_matching(&filter, Close::gateway(1001, reason));
            if first {
                tracing::info!(tenant = %tenant, route = %template, closed, "reload grace over: {reason}");
            }
        }
        true
    }
}

/// Removes the entries of `tenants` from a per-tenant map.
fn forget<V>(map: &std::sync::Mutex<std::collections::HashMap<Arc<str>, V>>, tenants: &[Arc<str>]) {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|id, _| !tenants.contains(id));
}

/// Every route of `old` that `new` lacks, with its old self.
fn removed_routes(old: &Snapshot, new: &Snapshot) -> Vec<(RouteKey, Arc<Route>)> {
    let mut removed = Vec::new();
    for tenant in old.tenants() {
        for route in tenant.routes.values() {
            let kept = new
                .tenant(&tenant.id)
                .is_some_and(|t| t.route(&route.template).is_some());
            if !kept {
                removed.push(((tenant.id.clone(), route.template.clone()), route.clone()));
            }
        }
    }
    removed
}

/// What differs between two snapshots.
fn diff(old: &Snapshot, new: &Snapshot) -> ReloadReport {
    let tenants = |s: &Snapshot| -> BTreeMap<String, String> {
        s.config
            .tenants
            .iter()
            .map(|(id, t)| (id.clone(), tenant_fingerprint(t)))
            .collect()
    };
    let routes = |s: &Snapshot| -> BTreeMap<String, String> {
        s.config
            .tenants
            .iter()
            .flat_map(|(id, t)| {
                t.routes
                    .iter()
                    .map(move |(template, r)| (format!("{id} {template}"), format!("{r:?}")))
            })
            .collect()
    };
    let mut plugins = PluginChanges::default();
    for (key, fingerprint) in &new.plugins {
        let name = format!("{}/{}", key.0, key.1);
        match old.plugins.get(key) {
            None => plugins.added.push(name),
            Some(before) if before != fingerprint => plugins.replaced.push(name),
            Some(_) => plugins.unchanged.push(name),
        }
    }
    plugins.removed = old
        .plugins
        .keys()
        .filter(|key| !new.plugins.contains_key(*key))
        .map(|(tenant, plugin)| format!("{tenant}/{plugin}"))
        .collect();
    ReloadReport {
        tenants: Changes::between(&tenants(old), &tenants(new)),
        routes: Changes::between(&routes(old), &routes(new)),
        plugins,
        needs_restart: Vec::new(),
        ..ReloadReport::default()
    }
}

/// A tenant's settings as text, with a digest of its secrets in place of the `***`
/// their `Debug` shows, so that a rotated key counts as a change.
fn tenant_fingerprint(tenant: &crate::config::TenantConfig) -> String {
    use sha2::{Digest as _, Sha256};
    let mut secrets = Sha256::new();
    for key in &tenant.credentials.bearer_keys {
        secrets.update(key.expose().as_bytes());
        secrets.update([0]);
    }
    for aws in &tenant.credentials.aws {
        secrets.update(aws.secret_access_key.expose().as_bytes());
        secrets.update([0]);
    }
    format!("{tenant:?} {:x}", secrets.finalize())
}

/// The settings read at start-up only that differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = BTreeSet::new();
    let mut differ = |key: &str, a: String, b: String| {
        if a != b {
            keys.insert(key.to_owned());
        }
    };
    differ(
        "cluster",
        format!("{:?}", old.cluster),
        format!("{:?}", new.cluster),
    );
    differ(
        "compile",
        format!("{:?}", old.compile),
        format!("{:?}", new.compile),
    );
    differ(
        "limits.max_wasm_stack_bytes",
        old.limits.max_wasm_stack_bytes.to_string(),
        new.limits.max_wasm_stack_bytes.to_string(),
    );
    differ(
        "tls (on or off)",
        old.tls.is_some().to_string(),
        new.tls.is_some().to_string(),
    );
    let admin = |c: &Config| {
        let a = &c.admin;
        format!(
            "{} {:?} {} {} {} {}",
            a.max_connections,
            a.header_timeout,
            a.auth_failures_per_minute,
            a.auth_failure_burst,
            a.auth_failure_sources,
            a.replay_cache_signatures
        )
    };
    differ(
        "admin (max_connections, header_timeout, auth_failure_*, replay_cache_signatures)",
        admin(old),
        admin(new),
    );
    keys.into_iter().collect()
}

fn summary(added: &[String], removed: &[String], changed: &[String]) -> String {
    format!("+{} -{} ~{}", added.len(), removed.len(), changed.len())
}

/// Reloads at every `SIGHUP` from `hangups`, for as long as the process runs: a
/// closed terminal or a `systemctl reload` never ends the gateway.
pub async fn reload_on_hangup(gateway: Arc<Gateway>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        // A refused reload is logged by `reload`; the config in force stays.
        let _ = gateway.reload().await;
    }
}
